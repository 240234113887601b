/*
 * addr.h — parsing and formatting of listen/dial addresses (pure, no DNS).
 *
 * Accepted listen forms: "0.0.0.0:8443", "127.0.0.1:0", "[::1]:8443",
 * "[::]:8443", ":8443" (all IPv4 interfaces, i.e. 0.0.0.0), "localhost:8443"
 * (127.0.0.1, resolved without DNS), and a bare IP literal ("::1",
 * "10.0.0.1") which takes the default port. Ports are decimal 0..65535 with
 * no sign, no leading/trailing garbage. Nothing here blocks or allocates.
 */
#ifndef WP_ADDR_H
#define WP_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Longest string wp_addr_format() produces, including the NUL ("[v6%scope]:65535"). */
#define WP_ADDR_STRLEN 80

/*
 * Parses a literal listen/dial address into *out (AF_INET or AF_INET6) and sets
 * *len to the sockaddr length. default_port (0..65535) is used when s has no
 * port; pass -1 to require one. Returns 0 or WP_ERR_INVAL (NULL arguments, not
 * an IP literal / "localhost", port missing or out of range, trailing garbage).
 * On failure *out and *len are untouched.
 */
int wp_addr_parse(const char *s, int default_port, struct sockaddr_storage *out, socklen_t *len);

/*
 * Formats an AF_INET/AF_INET6 address as "127.0.0.1:8443" or "[::1]:8443".
 * Returns the string length (>= 0), WP_ERR_INVAL (NULL, other family) or
 * WP_ERR_LIMIT (cap too small; out then holds "" if cap > 0).
 */
int wp_addr_format(const struct sockaddr *sa, char *out, size_t cap);

/*
 * Splits "host:port" / "[v6]:port" where host may be a DNS name (for dialing).
 * host receives the name without brackets (NUL-terminated, hcap bytes). A
 * missing ":port" is an error. Host names must be 1..253 characters of
 * [A-Za-z0-9.-_] or an IP literal. Returns 0, WP_ERR_INVAL (malformed, port
 * out of 1..65535) or WP_ERR_LIMIT (host longer than hcap-1).
 */
int wp_hostport_split(const char *s, char *host, size_t hcap, int *port);

#endif
