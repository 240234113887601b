/*
 * pgjson.h — PostgreSQL result rows as JSON objects for API answers.
 *
 * Column names become keys; SQL NULL becomes null; bool, integer and json/jsonb
 * columns keep their JSON types; everything else (text, uuid, timestamps
 * formatted by the query) is a string.
 */
#ifndef CP_PGJSON_H
#define CP_PGJSON_H

#include <cjson/cJSON.h>
#include <libpq-fe.h>

/* RFC 3339 UTC rendering of a timestamptz column, for SELECT lists. */
#define CP_SQL_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* One row as an object (NULL on allocation failure). */
cJSON *cp_pgjson_row(const PGresult *res, int row);
/* Every row as an array of objects (NULL on allocation failure). */
cJSON *cp_pgjson_rows(const PGresult *res);

/*
 * One page of a list endpoint: {"<key>": [first `limit` rows], "next_cursor": <first column
 * of the last row shown when the query returned more than limit rows (it asks for limit + 1),
 * else null>}. NULL on allocation failure.
 */
cJSON *cp_pgjson_page(const PGresult *res, const char *key, int limit);

#endif
