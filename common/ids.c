/*
 * ids.c — identifier syntax checks (see ids.h).
 */
#include "ids.h"

#include <string.h>

#include "crypto.h"

/* [a-z0-9] first, then [a-z0-9-], 1..max bytes. */
static int wp_name_valid(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
        if (!ok)
            return 0;
    }
    return 1;
}

int wp_node_id_valid(const char *s)
{
    return wp_name_valid(s, WP_NODE_ID_MAX);
}

int wp_service_name_valid(const char *s)
{
    return wp_name_valid(s, WP_SERVICE_NAME_MAX);
}

int wp_uuid_valid(const char *s)
{
    if (!s || strlen(s) != 36)
        return 0;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (wp_hex_digit(s[i]) < 0) {
            return 0;
        }
    }
    return 1;
}
