/* rc: the return-code vocabulary of functions that can do more than succeed or fail.
 *
 * A function returning int that only succeeds or fails returns SGPU_OK (0) or SGPU_ERROR (-1).
 * One that may also have to wait (for I/O, a timer, a worker) returns SGPU_AGAIN, and one that
 * looked at its input and found it is not its business (a route handler for another path, a
 * provider operation a provider does not have) returns SGPU_DECLINED, so the caller tries the
 * next.  HTTP statuses are never used as return codes: they go into the reply. */
#ifndef SGPU_RC_H
#define SGPU_RC_H

enum sgpu_rc {
    SGPU_OK = 0,
    SGPU_ERROR = -1,
    SGPU_AGAIN = -2,
    SGPU_DECLINED = -3,
};

#endif
