/*
 * watchdog.c — the Wolf restart decision (see watchdog.h). Pure: no I/O, no clock.
 */
#include "watchdog.h"

#include <string.h>

void na_watchdog_init(na_watchdog *w, int enabled, unsigned after, uint64_t cooldown_ms)
{
    memset(w, 0, sizeof(*w));
    w->enabled = enabled ? 1 : 0;
    w->after = after ? after : 1;
    w->cooldown_ms = cooldown_ms;
}

int na_watchdog_observe(na_watchdog *w, int wolf_healthy, uint64_t now_ms)
{
    if (wolf_healthy) {
        w->consecutive = 0;
        return NA_WATCHDOG_NOTHING;
    }
    if (w->consecutive < UINT32_MAX)
        w->consecutive++;
    if (!w->enabled || w->running || w->consecutive < w->after)
        return NA_WATCHDOG_NOTHING;
    if (w->has_run && now_ms - w->last_run_ms < w->cooldown_ms)
        return NA_WATCHDOG_NOTHING;
    w->has_run = 1;
    w->running = 1;
    w->last_run_ms = now_ms;
    w->runs++;
    return NA_WATCHDOG_RUN;
}

void na_watchdog_finished(na_watchdog *w)
{
    w->running = 0;
}
