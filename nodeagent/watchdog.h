/*
 * watchdog.h — when to run --wolf-restart-cmd: a pure state machine.
 *
 * After every probe round the agent tells the watchdog whether Wolf was
 * healthy (na_wolfprobe_wolf_healthy). After `after` consecutive unhealthy
 * rounds it answers NA_WATCHDOG_RUN, at most once per cool-down, never while
 * the previous run is still going and never when no command is configured.
 * The agent does the I/O (uv_spawn of /bin/sh -c CMD, the event to the control
 * plane) and calls na_watchdog_finished() when the command exited.
 */
#ifndef NA_WATCHDOG_H
#define NA_WATCHDOG_H

#include <stdint.h>

enum na_watchdog_action { NA_WATCHDOG_NOTHING = 0, NA_WATCHDOG_RUN = 1 };

typedef struct na_watchdog {
    int enabled;          /* a restart command is configured */
    unsigned after;       /* consecutive unhealthy rounds before a run (>= 1) */
    uint64_t cooldown_ms; /* least time between two runs */
    unsigned consecutive; /* unhealthy rounds in a row now */
    int running;          /* a run was started and has not finished */
    int has_run;
    uint64_t last_run_ms; /* when the last run started (caller's clock) */
    uint64_t runs;        /* runs started */
} na_watchdog;

/* Sets up w; after 0 is taken as 1. Never fails. */
void na_watchdog_init(na_watchdog *w, int enabled, unsigned after, uint64_t cooldown_ms);

/*
 * One probe round's verdict at now_ms (a monotonic clock). Returns
 * NA_WATCHDOG_RUN when the command must run now (and records the run), else
 * NA_WATCHDOG_NOTHING. A healthy round resets the consecutive count.
 */
int na_watchdog_observe(na_watchdog *w, int wolf_healthy, uint64_t now_ms);

/* The command started by the last NA_WATCHDOG_RUN exited (or could not start). */
void na_watchdog_finished(na_watchdog *w);

#endif
