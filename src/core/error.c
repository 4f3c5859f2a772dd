/* error.c - the table behind error.h: one row per error. */
#include "core/error.h"

struct error_row {
    const char *code;
    int status;
    const char *message;
};

static const struct error_row rows[WSFAN_ERROR_COUNT] = {
    [0] = {"ok", 200, "no error"},
    [-WSFAN_EBAD_JSON] = {"bad_json", 400, "not valid JSON"},
    [-WSFAN_EBAD_COMMAND] = {"bad_command", 400, "the command is missing a field or has a wrong one"},
    [-WSFAN_EUNKNOWN_TYPE] = {"unknown_type", 400, "unknown command type"},
    [-WSFAN_EROOM_INVALID] = {"room_invalid", 400, "room must be 1 to 128 characters of A-Z a-z 0-9 _ . : -"},
    [-WSFAN_EUSER_INVALID] = {"user_invalid", 400, "user must be 1 to 128 characters of A-Z a-z 0-9 _ . : -"},
    [-WSFAN_ENOT_MEMBER] = {"not_member", 400, "join the room first"},
    [-WSFAN_ETOO_MANY_ROOMS] = {"too_many_rooms", 400, "this connection is in as many rooms as allowed"},
    [-WSFAN_ETOO_LARGE] = {"too_large", 413, "too large"},
    [-WSFAN_EFORBIDDEN] = {"forbidden", 403, "not allowed"},
    [-WSFAN_ERATE_LIMITED] = {"rate_limited", 429, "too many commands waiting for replies; wait for some"},
    [-WSFAN_EUNAVAILABLE] = {"unavailable", 503, "the bus or the store is not connected"},
    [-WSFAN_EHISTORY_UNAVAILABLE] = {"history_unavailable", 503, "history is not available"},
    [-WSFAN_ENOMEM] = {"unavailable", 503, "out of memory"},
    [-WSFAN_EBAD_REQUEST] = {"bad_request", 400, "malformed request"},
    [-WSFAN_EUNSUPPORTED_MEDIA_TYPE] = {"unsupported_media_type", 415,
                                        "the body must be JSON (Content-Type: application/json)"},
    [-WSFAN_ENOT_FOUND] = {"not_found", 404, "no such API endpoint"},
    [-WSFAN_EMETHOD_NOT_ALLOWED] = {"method_not_allowed", 405, "method not allowed"},
    [-WSFAN_EUNAUTHORIZED] = {"unauthorized", 401, "send Authorization: Bearer <api key>"},
    [-WSFAN_ETOKEN_INVALID] = {"token_invalid", 401, "the token does not verify"},
};

static const struct error_row *row(int err)
{
    return err <= 0 && -err < WSFAN_ERROR_COUNT ? &rows[-err] : &rows[-WSFAN_EBAD_COMMAND];
}

const char *wsfan_error_code(int err) { return row(err)->code; }
int wsfan_error_status(int err) { return row(err)->status; }
const char *wsfan_strerror(int err) { return row(err)->message; }
