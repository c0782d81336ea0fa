/* clock: the project's time vocabulary.
 *
 * Durations and deadlines are double seconds on the monotonic clock (clock_mono); timestamps
 * shown to people or stored are double seconds since the Unix epoch (clock_wall).  libevent
 * timers take a struct timeval: clock_tv converts, so no file converts by hand. */
#ifndef SGPU_CLOCK_H
#define SGPU_CLOCK_H

#include <sys/time.h>

/* Seconds on CLOCK_MONOTONIC (arbitrary origin; only differences mean anything). */
double clock_mono(void);
/* Seconds since the Unix epoch on CLOCK_REALTIME. */
double clock_wall(void);
/* s seconds as a timeval for event_add(); negative, NaN or infinite become 0 and values above
 * 1e9 seconds are capped there (a timer that long is never meant). */
struct timeval clock_tv(double s);
/* ms milliseconds as a timeval (negative becomes 0). */
struct timeval clock_tv_ms(long ms);

#endif
