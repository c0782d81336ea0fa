/* clock: monotonic and wall seconds as doubles, and timeval conversion (see clock.h). */
#include "clock.h"

#include <math.h>
#include <time.h>

double clock_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double clock_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct timeval clock_tv(double s)
{
    if (!isfinite(s) || s <= 0) return (struct timeval){0, 0};
    if (s > 1e9) s = 1e9;
    double whole = floor(s);
    long us = (long)((s - whole) * 1e6);
    if (us > 999999) us = 999999;
    return (struct timeval){(time_t)whole, (suseconds_t)us};
}

struct timeval clock_tv_ms(long ms)
{
    if (ms <= 0) return (struct timeval){0, 0};
    return (struct timeval){(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
}
