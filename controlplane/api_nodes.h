/*
 * api_nodes.h — /api/v1/nodes: pre-register, list (filters, cursor pages), get, patch,
 * drain/undrain and deregister GPU nodes (admin only).
 */
#ifndef CP_API_NODES_H
#define CP_API_NODES_H

#include "server.h"

#define CP_NODES_PAGE_DEFAULT 100
#define CP_NODES_PAGE_MAX     500

/* Registers the node routes (admin only). 0 or a WP_ERR_* from the router. */
int cp_api_nodes_register(cp_server *s);

/*
 * Parses a page size query value: NULL or "" gives dflt; otherwise 1 to 6
 * decimal digits (no sign or spaces) with a value in 1..max. Returns the
 * size, or WP_ERR_INVAL.
 */
int cp_api_page_limit(const char *s, int dflt, int max);

#endif
