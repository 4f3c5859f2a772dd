/* error.h - the one list of errors wsfan reports: each has the code that
 * clients see (docs/protocol.md section 3 for commands, section 7 for the
 * HTTP API), the HTTP status the API answers it with, and a default line
 * for humans. Functions return 0 or a negative WSFAN_E*. Any thread. */
#ifndef WSFAN_ERROR_H
#define WSFAN_ERROR_H

enum wsfan_error {
    WSFAN_OK = 0,
    WSFAN_EBAD_JSON = -1,
    WSFAN_EBAD_COMMAND = -2,
    WSFAN_EUNKNOWN_TYPE = -3,
    WSFAN_EROOM_INVALID = -4,
    WSFAN_EUSER_INVALID = -5,
    WSFAN_ENOT_MEMBER = -6,
    WSFAN_ETOO_MANY_ROOMS = -7,
    WSFAN_ETOO_LARGE = -8,
    WSFAN_EFORBIDDEN = -9,
    WSFAN_ERATE_LIMITED = -10,
    WSFAN_EUNAVAILABLE = -11,
    WSFAN_EHISTORY_UNAVAILABLE = -12,
    WSFAN_ENOMEM = -13,
    WSFAN_EBAD_REQUEST = -14,
    WSFAN_EUNSUPPORTED_MEDIA_TYPE = -15,
    WSFAN_ENOT_FOUND = -16,
    WSFAN_EMETHOD_NOT_ALLOWED = -17,
    WSFAN_EUNAUTHORIZED = -18,
    WSFAN_ETOKEN_INVALID = -19,
};
#define WSFAN_ERROR_COUNT 20

/* The code clients see, e.g. "not_member" (out of memory is "unavailable"). */
const char *wsfan_error_code(int err);

/* The HTTP status the API answers err with (400 for an unknown err). */
int wsfan_error_status(int err);

/* A line for humans: what went wrong, or what to do about it. */
const char *wsfan_strerror(int err);

#endif
