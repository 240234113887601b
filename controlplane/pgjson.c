/*
 * pgjson.c — PGresult rows to cJSON (see pgjson.h).
 */
#include "pgjson.h"

#include <stdlib.h>
#include <string.h>

/* Built-in type OIDs (pg_type.h is server-side only). */
#define CP_OID_BOOL  16
#define CP_OID_INT8  20
#define CP_OID_INT2  21
#define CP_OID_INT4  23
#define CP_OID_JSON  114
#define CP_OID_JSONB 3802

static cJSON *cp_pgjson_value(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return cJSON_CreateNull();
    const char *v = PQgetvalue(res, row, col);
    switch (PQftype(res, col)) {
    case CP_OID_BOOL:
        return cJSON_CreateBool(v[0] == 't');
    case CP_OID_INT2:
    case CP_OID_INT4:
    case CP_OID_INT8:
        return cJSON_CreateNumber((double)strtoll(v, NULL, 10));
    case CP_OID_JSON:
    case CP_OID_JSONB: {
        cJSON *j = cJSON_Parse(v);
        return j ? j : cJSON_CreateNull();
    }
    default:
        return cJSON_CreateString(v);
    }
}

cJSON *cp_pgjson_row(const PGresult *res, int row)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    for (int c = 0; c < PQnfields(res); c++) {
        cJSON *v = cp_pgjson_value(res, row, c);
        if (!v || !cJSON_AddItemToObject(o, PQfname(res, c), v)) {
            cJSON_Delete(v);
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

cJSON *cp_pgjson_rows(const PGresult *res)
{
    cJSON *a = cJSON_CreateArray();
    if (!a)
        return NULL;
    for (int r = 0; r < PQntuples(res); r++) {
        cJSON *o = cp_pgjson_row(res, r);
        if (!o || !cJSON_AddItemToArray(a, o)) {
            cJSON_Delete(o);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

cJSON *cp_pgjson_page(const PGresult *res, const char *key, int limit)
{
    int n = PQntuples(res);
    cJSON *o = cJSON_CreateObject();
    cJSON *rows = o ? cJSON_AddArrayToObject(o, key) : NULL;
    int ok = rows != NULL;
    for (int i = 0; ok && i < n && i < limit; i++) {
        cJSON *row = cp_pgjson_row(res, i);
        ok = row && cJSON_AddItemToArray(rows, row);
        if (!ok)
            cJSON_Delete(row);
    }
    if (ok)
        ok = n > limit && limit > 0
                 ? cJSON_AddStringToObject(o, "next_cursor", PQgetvalue(res, limit - 1, 0)) != NULL
                 : cJSON_AddNullToObject(o, "next_cursor") != NULL;
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
