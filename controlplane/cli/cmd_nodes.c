/*
 * cmd_nodes.c — `wolfpack nodes list | get | drain | undrain | delete` over /api/v1/nodes
 * (admin). list takes the API's filters (status, gpu_vendor, label) and follows its pages.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define WPC_NODES_USAGE                                                                            \
    "wolfpack nodes list [--status S] [--gpu-vendor V] [--label k=v,...] [--limit N] "             \
    "[--cursor C] | get ID | drain ID | undrain ID | delete ID [--force]"

/*
 * Joins the --label values ("a=b", "c=d,e=f") into one selector "a=b,c=d,e=f" in out.
 * Returns 0 (out empty when none), or WPC_EXIT_USAGE after printing why.
 */
static int wpc_nodes_selector(const wp_strlist *l, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < l->n; i++) {
        int n = snprintf(out + len, cap - len, "%s%s", len ? "," : "", l->items[i]);
        if (n < 0 || (size_t)n >= cap - len)
            return wpc_usage_error("--label: the selector is too long");
        len += (size_t)n;
    }
    return 0;
}

static int wpc_nodes_list(wpc_config *c)
{
    char sel[4096];
    if (wpc_flags_check(c,
                        WPC_F_STATUS | WPC_F_GPU_VENDOR | WPC_F_LABEL | WPC_F_LIMIT |
                            WPC_F_PAGE_SIZE | WPC_F_CURSOR,
                        "nodes list") != 0 ||
        wpc_nodes_selector(&c->label, sel, sizeof(sel)) != 0)
        return WPC_EXIT_USAGE;
    wpc_query q;
    wpc_query_init(&q);
    wpc_query_add(&q, c, "status", c->status);
    wpc_query_add(&q, c, "gpu_vendor", c->gpu_vendor);
    wpc_query_add(&q, c, "label", sel[0] ? sel : NULL);
    int rc = wpc_api_list(c, "/api/v1/nodes", &q, "nodes");
    wpc_query_free(&q);
    return rc;
}

int wpc_cmd_nodes(wpc_config *c, const char **pos, size_t npos)
{
    const char *verb = npos >= 2 ? pos[1] : "";
    char path[WPC_ARG_MAX * 3 + 64];
    if (npos == 2 && strcmp(verb, "list") == 0)
        return wpc_nodes_list(c);
    if (npos != 3)
        return wpc_usage_error("%s", WPC_NODES_USAGE);
    const char *method = NULL, *suffix = "";
    unsigned allowed = 0;
    if (strcmp(verb, "get") == 0) {
        method = "GET";
    } else if (strcmp(verb, "drain") == 0) {
        method = "POST";
        suffix = "/drain";
    } else if (strcmp(verb, "undrain") == 0) {
        method = "POST";
        suffix = "/undrain";
    } else if (strcmp(verb, "delete") == 0) {
        method = "DELETE";
        suffix = c->force ? "?force=true" : "";
        allowed = WPC_F_FORCE;
    } else {
        return wpc_usage_error("%s", WPC_NODES_USAGE);
    }
    char what[32];
    snprintf(what, sizeof(what), "nodes %s", verb);
    if (wpc_flags_check(c, allowed, what) != 0)
        return WPC_EXIT_USAGE;
    int rc = wpc_path_id(c, "/api/v1/nodes", pos[2], suffix, path, sizeof(path));
    return rc != 0 ? rc : wpc_api(c, method, path, NULL);
}
