/*
 * ids.h — syntax of the identifiers both binaries exchange: node ids and UUIDs.
 */
#ifndef WP_IDS_H
#define WP_IDS_H

#include "wolfpack/proto.h" /* WP_NODE_ID_MAX */

/* Node id: [a-z0-9][a-z0-9-]{0,62}. Returns 1 if s is valid. */
int wp_node_id_valid(const char *s);

/* Service name syntax (PROTOCOL.md §6.2): [a-z0-9][a-z0-9-]{0,31}. 1 if valid, 0 otherwise (also
 * NULL). */
int wp_service_name_valid(const char *s);

/* Canonical textual UUID (8-4-4-4-12 hex digits, either case). Returns 1 if valid. */
int wp_uuid_valid(const char *s);

#endif
