/*
 * curl_uv.h — libcurl's multi interface driven by a libuv loop.
 *
 * One wp_curlm wraps one CURLM: libcurl tells it which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION: one uv_poll_t per socket, allocated on demand and
 * freed in its close callback) and when to wake up (CURLMOPT_TIMERFUNCTION:
 * one uv_timer_t); readiness is handed back with curl_multi_socket_action()
 * and finished transfers are collected with curl_multi_info_read(). Nothing
 * ever blocks the loop: name resolution uses libcurl's own resolver (the
 * threaded resolver of Debian's libcurl), everything else is non-blocking.
 *
 * Rules for users:
 *   - curl_global_init(CURL_GLOBAL_DEFAULT) must have run once in main()
 *     before the first wp_curlm_new() (it is not thread-safe and libcurl would
 *     otherwise call it lazily from curl_easy_init); both binaries do this.
 *   - The caller owns each easy handle. While it is added it must not be
 *     curl_easy_cleanup()'d; wp_curlm_remove() it first (or wait for done).
 *   - Callbacks run from the loop only, never from inside wp_curlm_add()/
 *     wp_curlm_remove()/wp_curlm_close(). Inside done() the caller may add,
 *     remove or clean up easy handles and may even wp_curlm_close() the multi.
 *   - CONNECT_ONLY: libcurl closes a CONNECT_ONLY connection when its easy
 *     leaves the multi (curl_easy_send/recv stop working), so a caller that
 *     wants to use the connected socket adds the easy with
 *     wp_curlm_add_connect_only(): on success it stays in the multi (libcurl
 *     no longer watches its socket, so the caller may uv_poll it) until the
 *     caller wp_curlm_remove()s it.
 */
#ifndef WP_CURL_UV_H
#define WP_CURL_UV_H

#include <curl/curl.h>
#include <uv.h>

typedef struct wp_curlm wp_curlm;

/* Completion of one transfer; see wp_curlm_add(). */
typedef void (*wp_curlm_done_fn)(CURL *easy, CURLcode result, void *ud);

/*
 * Creates a multi driven by loop. Returns 0 with *out set, WP_ERR_INVAL (NULL
 * arguments), WP_ERR_NOMEM or WP_ERR_INTERNAL (libcurl refused to set up).
 * Release it with wp_curlm_close().
 */
int wp_curlm_new(uv_loop_t *loop, wp_curlm **out);

/*
 * Starts easy. done(easy, result, ud) runs once from the loop (never inside
 * this call); the easy is already removed from the multi when done runs and
 * belongs to the caller again. Returns 0, or WP_ERR_INVAL (NULL arguments,
 * easy already added), WP_ERR_STATE (the multi is closing), WP_ERR_NOMEM,
 * WP_ERR_INTERNAL (curl_multi_add_handle failed); then done never runs.
 */
int wp_curlm_add(wp_curlm *m, CURL *easy, wp_curlm_done_fn done, void *ud);

/*
 * As wp_curlm_add() for an easy with CURLOPT_CONNECT_ONLY set, except that
 * when result is CURLE_OK the easy is still in the multi when done runs (so
 * CURLINFO_ACTIVESOCKET, curl_easy_send and curl_easy_recv work), libcurl no
 * longer polls its socket, and the caller must wp_curlm_remove() it when it
 * is finished with the connection (which closes the connection). On a failure
 * it is removed before done as usual. Same return values.
 */
int wp_curlm_add_connect_only(wp_curlm *m, CURL *easy, wp_curlm_done_fn done, void *ud);

/*
 * Cancels easy (pending or kept by wp_curlm_add_connect_only): it leaves the
 * multi, no done callback runs. A handle that is not in m is ignored.
 */
void wp_curlm_remove(wp_curlm *m, CURL *easy);

/* Number of easy handles in m (pending and kept). */
size_t wp_curlm_count(const wp_curlm *m);

/*
 * Cancels every transfer (no done callbacks), closes all libuv handles and
 * frees m; closed(ud) (may be NULL) runs from the loop once the last handle is
 * closed. The easy handles stay the callers' to clean up. m must not be used
 * after this call. NULL m is ignored (closed is not called).
 */
void wp_curlm_close(wp_curlm *m, void (*closed)(void *ud), void *ud);

#endif
