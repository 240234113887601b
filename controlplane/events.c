/*
 * events.c — appending audit events (see events.h).
 */
#include "events.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ids.h"
#include "json.h"
#include "log.h"

#define CP_EVENTS_INSERT_SQL                                                                       \
    "INSERT INTO events (type, node_id, session_id, token_id, replica_id, message, data) "         \
    "VALUES ($1, $2, $3::uuid, $4::uuid, $5, coalesce($6, ''), coalesce($7::jsonb, '{}')) "        \
    "RETURNING id"

int cp_event_type_valid(const char *s)
{
    if (!s || !(s[0] >= 'a' && s[0] <= 'z'))
        return 0;
    size_t n = 1;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
            return 0;
    }
    return n <= CP_EVENT_TYPE_MAX;
}

static int cp_events_replica_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return n >= 1 && n <= 64;
}

int cp_event_check(const cp_event *ev)
{
    if (!ev || !cp_event_type_valid(ev->type))
        return WP_ERR_INVAL;
    if (ev->node_id && !wp_node_id_valid(ev->node_id))
        return WP_ERR_INVAL;
    if ((ev->session_id && !wp_uuid_valid(ev->session_id)) ||
        (ev->token_id && !wp_uuid_valid(ev->token_id)))
        return WP_ERR_INVAL;
    if (ev->replica_id && !cp_events_replica_valid(ev->replica_id))
        return WP_ERR_INVAL;
    if (ev->message) {
        size_t n = strlen(ev->message);
        if (n > CP_EVENT_MESSAGE_MAX || !wp_utf8_valid(ev->message, n))
            return WP_ERR_INVAL;
    }
    if (ev->data && !cJSON_IsObject(ev->data))
        return WP_ERR_INVAL;
    return 0;
}

/* Prints ev->data (NULL when absent) into *text; 0, WP_ERR_INVAL (too large), WP_ERR_NOMEM. */
static int cp_events_data_text(const cp_event *ev, char **text)
{
    *text = NULL;
    if (!ev->data)
        return 0;
    char *t = wp_json_print(ev->data);
    if (!t)
        return WP_ERR_NOMEM;
    if (strlen(t) > CP_EVENT_DATA_MAX) {
        cJSON_free(t);
        return WP_ERR_INVAL;
    }
    *text = t;
    return 0;
}

typedef struct cp_events_add_req {
    cp_events_cb cb;
    void *ud;
} cp_events_add_req;

static long long cp_events_result_id(int err, PGresult *res)
{
    if (err != 0 || !res || PQntuples(res) != 1)
        return 0;
    return strtoll(PQgetvalue(res, 0, 0), NULL, 10);
}

static void cp_events_added(int err, PGresult *res, void *ud)
{
    cp_events_add_req *r = ud;
    long long id = cp_events_result_id(err, res);
    if (err == 0 && id <= 0)
        err = WP_ERR_INTERNAL;
    cp_events_cb cb = r->cb;
    void *cud = r->ud;
    free(r);
    cb(err, id, cud);
}

static void cp_events_added_unwatched(int err, PGresult *res, void *ud)
{
    (void)ud;
    if (err != 0)
        wp_log_warn("cannot append event", WP_LE("err", err),
                    WP_LS("sqlstate", cp_db_sqlstate(res)));
}

/* cp_events_add and cp_events_add_tx: db or tx is set. */
static int cp_events_insert(cp_db *db, cp_db_tx *tx, const cp_event *ev, cp_events_cb cb, void *ud)
{
    if ((!db && !tx) || cp_event_check(ev) != 0)
        return WP_ERR_INVAL;
    char *data = NULL;
    int rc = cp_events_data_text(ev, &data);
    if (rc != 0)
        return rc;
    cp_events_add_req *r = NULL;
    if (cb) {
        r = malloc(sizeof(*r));
        if (!r) {
            cJSON_free(data);
            return WP_ERR_NOMEM;
        }
        r->cb = cb;
        r->ud = ud;
    }
    const char *params[] = {ev->type,    ev->node_id, ev->session_id, ev->token_id, ev->replica_id,
                            ev->message, data};
    cp_db_result_cb rcb = r ? cp_events_added : cp_events_added_unwatched;
    if (tx)
        rc = cp_db_tx_query(tx, CP_EVENTS_INSERT_SQL, 7, params, rcb, r);
    else
        rc = cp_db_query(db, CP_EVENTS_INSERT_SQL, 7, params, rcb, r);
    cJSON_free(data);
    if (rc != 0)
        free(r);
    return rc;
}

int cp_events_add(cp_db *db, const cp_event *ev, cp_events_cb cb, void *ud)
{
    if (!db)
        return WP_ERR_INVAL;
    return cp_events_insert(db, NULL, ev, cb, ud);
}

int cp_events_add_tx(cp_db_tx *tx, const cp_event *ev, cp_events_cb cb, void *ud)
{
    if (!tx || !cb)
        return WP_ERR_INVAL;
    return cp_events_insert(NULL, tx, ev, cb, ud);
}

int cp_events_append(cp_db *db, const char *type, const char *node_id, const char *session_id,
                     const cJSON *data, cp_events_cb cb, void *ud)
{
    cp_event ev = {.type = type, .node_id = node_id, .session_id = session_id, .data = data};
    return cp_events_add(db, &ev, cb, ud);
}

int cp_events_append_tx(cp_db_tx *tx, const char *type, const char *node_id, const char *session_id,
                        const cJSON *data, cp_events_cb cb, void *ud)
{
    cp_event ev = {.type = type, .node_id = node_id, .session_id = session_id, .data = data};
    return cp_events_add_tx(tx, &ev, cb, ud);
}

/* ---- cp_events_exec: statement + events in one transaction ---- */

typedef struct cp_events_job {
    cp_db_tx *tx;
    cp_events_build_fn build;
    cp_db_result_cb cb;
    void *ud;
    char *sql;
    int nparams;
    char **params; /* NULL entries are SQL NULL */
    PGresult *res; /* copy of the statement's result */
    int row;       /* next row to build an event from */
    int err;
} cp_events_job;

static void cp_events_job_free(cp_events_job *j)
{
    if (j->res)
        PQclear(j->res);
    for (int i = 0; i < j->nparams; i++)
        free(j->params[i]);
    free(j->params);
    free(j->sql);
    free(j);
}

static void cp_events_job_finish(cp_events_job *j, int err)
{
    j->cb(err, err == 0 ? j->res : NULL, j->ud);
    cp_events_job_free(j);
}

static void cp_events_job_rolled_back(int err, void *ud)
{
    (void)err;
    cp_events_job *j = ud;
    cp_events_job_finish(j, j->err);
}

static void cp_events_job_fail(cp_events_job *j, int err)
{
    j->err = err;
    cp_db_tx *tx = j->tx;
    j->tx = NULL;
    if (cp_db_tx_rollback(tx, cp_events_job_rolled_back, j) != 0)
        cp_events_job_finish(j, err); /* connection gone: the server rolled back */
}

static void cp_events_job_committed(int err, void *ud)
{
    cp_events_job_finish(ud, err);
}

static void cp_events_job_next(cp_events_job *j);

static void cp_events_job_event_added(int err, long long id, void *ud)
{
    (void)id;
    cp_events_job *j = ud;
    if (err != 0) {
        cp_events_job_fail(j, err);
        return;
    }
    cp_events_job_next(j);
}

/* Appends the event of the next row that has one, or commits when none is left. */
static void cp_events_job_next(cp_events_job *j)
{
    while (j->row < PQntuples(j->res)) {
        cp_event ev;
        cJSON *data = NULL;
        memset(&ev, 0, sizeof(ev));
        int r = j->build(j->res, j->row++, &ev, &data, j->ud);
        if (r < 0) {
            cJSON_Delete(data);
            cp_events_job_fail(j, r);
            return;
        }
        if (r == 0) {
            cJSON_Delete(data);
            continue;
        }
        ev.data = data;
        int rc = cp_events_add_tx(j->tx, &ev, cp_events_job_event_added, j);
        cJSON_Delete(data);
        if (rc != 0)
            cp_events_job_fail(j, rc);
        return;
    }
    cp_db_tx *tx = j->tx;
    j->tx = NULL;
    int rc = cp_db_tx_commit(tx, cp_events_job_committed, j);
    if (rc != 0)
        cp_events_job_finish(j, rc);
}

static void cp_events_job_ran(int err, PGresult *res, void *ud)
{
    cp_events_job *j = ud;
    if (err != 0) {
        cp_events_job_fail(j, err);
        return;
    }
    j->res = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
    if (!j->res) {
        cp_events_job_fail(j, WP_ERR_NOMEM);
        return;
    }
    cp_events_job_next(j);
}

static void cp_events_job_begun(int err, cp_db_tx *tx, void *ud)
{
    cp_events_job *j = ud;
    if (err != 0) {
        cp_events_job_finish(j, err);
        return;
    }
    j->tx = tx;
    int rc = cp_db_tx_query(tx, j->sql, j->nparams, (const char *const *)j->params,
                            cp_events_job_ran, j);
    if (rc != 0)
        cp_events_job_fail(j, rc);
}

int cp_events_exec(cp_db *db, const char *sql, int nparams, const char *const *params,
                   cp_events_build_fn build, cp_db_result_cb cb, void *ud)
{
    if (!db || !sql || !build || !cb || nparams < 0 || nparams > CP_DB_PARAMS_MAX ||
        (nparams > 0 && !params))
        return WP_ERR_INVAL;
    cp_events_job *j = calloc(1, sizeof(*j));
    if (!j)
        return WP_ERR_NOMEM;
    j->build = build;
    j->cb = cb;
    j->ud = ud;
    j->sql = strdup(sql);
    j->params = nparams > 0 ? calloc((size_t)nparams, sizeof(char *)) : NULL;
    int ok = j->sql && (nparams == 0 || j->params);
    if (ok)
        j->nparams = nparams;
    for (int i = 0; ok && i < nparams; i++)
        if (params[i] && !(j->params[i] = strdup(params[i])))
            ok = 0;
    if (!ok) {
        cp_events_job_free(j);
        return WP_ERR_NOMEM;
    }
    int rc = cp_db_tx_begin(db, cp_events_job_begun, j);
    if (rc != 0)
        cp_events_job_free(j);
    return rc;
}
