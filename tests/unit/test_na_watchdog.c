/*
 * test_na_watchdog.c — unit tests for watchdog.c: N consecutive unhealthy
 * rounds, reset on a healthy round, one run per cool-down, none while running,
 * none when no command is configured.
 */
#include "watchdog.h"
#include "wp_test.h"

WP_TEST(runs_after_n_then_cooldown)
{
    na_watchdog w;
    na_watchdog_init(&w, 1, 3, 10000);
    WP_CHECK_EQ(na_watchdog_observe(&w, 0, 1000), NA_WATCHDOG_NOTHING);
    WP_CHECK_EQ(na_watchdog_observe(&w, 0, 2000), NA_WATCHDOG_NOTHING);
    WP_CHECK_EQ(na_watchdog_observe(&w, 0, 3000), NA_WATCHDOG_RUN);
    WP_CHECK_EQ(w.runs, 1);
    WP_CHECK_EQ(w.consecutive, 3);
    /* still running: nothing, even past the cool-down */
    WP_CHECK_EQ(na_watchdog_observe(&w, 0, 30000), NA_WATCHDOG_NOTHING);
    na_watchdog_finished(&w);
    /* within the cool-down of the run at 3000: nothing */
    na_watchdog_init(&w, 1, 3, 10000);
    for (int i = 1; i <= 2; i++)
        WP_CHECK_EQ(na_watchdog_observe(&w, 0, (uint64_t)i * 1000), NA_WATCHDOG_NOTHING);
    WP_CHECK_EQ(na_watchdog_observe(&w, 0, 3000), NA_WATCHDOG_RUN);
    na_watchdog_finished(&w);
    for (uint64_t t = 4000; t < 13000; t += 1000)
        WP_CHECK_EQ(na_watchdog_observe(&w, 0, t), NA_WATCHDOG_NOTHING);
    WP_CHECK_EQ(na_watchdog_observe(&w, 0, 13000), NA_WATCHDOG_RUN); /* cool-down over */
    WP_CHECK_EQ(w.runs, 2);
    na_watchdog_finished(&w);
    WP_CHECK_EQ(na_watchdog_observe(&w, 0, 14000), NA_WATCHDOG_NOTHING);
}

WP_TEST(healthy_resets_count)
{
    na_watchdog w;
    na_watchdog_init(&w, 1, 2, 0);
    WP_CHECK_EQ(na_watchdog_observe(&w, 0, 1), NA_WATCHDOG_NOTHING);
    WP_CHECK_EQ(na_watchdog_observe(&w, 1, 2), NA_WATCHDOG_NOTHING);
    WP_CHECK_EQ(w.consecutive, 0);
    WP_CHECK_EQ(na_watchdog_observe(&w, 0, 3), NA_WATCHDOG_NOTHING);
    WP_CHECK_EQ(na_watchdog_observe(&w, 0, 4), NA_WATCHDOG_RUN);
    na_watchdog_finished(&w);
    /* after a recovery, failures within the cool-down do not run it again */
    na_watchdog_init(&w, 1, 1, 5000);
    WP_CHECK_EQ(na_watchdog_observe(&w, 0, 100), NA_WATCHDOG_RUN);
    na_watchdog_finished(&w);
    WP_CHECK_EQ(na_watchdog_observe(&w, 1, 200), NA_WATCHDOG_NOTHING);
    WP_CHECK_EQ(na_watchdog_observe(&w, 0, 300), NA_WATCHDOG_NOTHING);
    WP_CHECK_EQ(na_watchdog_observe(&w, 0, 5100), NA_WATCHDOG_RUN);
}

WP_TEST(never_without_command)
{
    na_watchdog w;
    na_watchdog_init(&w, 0, 0, 0);
    WP_CHECK_EQ(w.after, 1);
    for (uint64_t t = 0; t < 100; t++)
        WP_CHECK_EQ(na_watchdog_observe(&w, 0, t * 100000), NA_WATCHDOG_NOTHING);
    WP_CHECK_EQ(w.runs, 0);
    WP_CHECK_EQ(w.consecutive, 100);
}

int main(void)
{
    WP_RUN(runs_after_n_then_cooldown);
    WP_RUN(healthy_resets_count);
    WP_RUN(never_without_command);
    return wp_test_done();
}
