/* event.h - builds the JSON text of server events (PROTOCOL.md section 3)
 * from parts that are already valid JSON or validated names, by splicing,
 * so that a message is serialized once per process. Pure functions, safe on
 * any thread. Returned strings are malloc'ed, NUL-terminated; the caller
 * frees them. NULL means out of memory. */
#ifndef WSFAN_EVENT_H
#define WSFAN_EVENT_H

#include <stddef.h>
#include <stdint.h>

#define OFFSET_MAX_LEN 48 /* "<ms>-<seq>" of two 64-bit numbers, and NUL */

/* {"type":"message","room":R,["offset":O,]"from":F|null,"data":D,"ts":T}
 * offset and from may be NULL; data is JSON text of data_len bytes. */
char *event_message(const char *room, const char *offset, const char *from, const char *data, size_t data_len,
                    uint64_t ts, size_t *len);

/* {"type":"direct"|"broadcast","from":F|null,"data":D,"ts":T} */
char *event_direct(const char *type, const char *from, const char *data, size_t data_len, uint64_t ts, size_t *len);

/* {"type":"presence_join"|"presence_leave","room":R,"user":U} */
char *event_presence(const char *type, const char *room, const char *user, size_t *len);

/* Wall-clock milliseconds since the epoch, for "ts". */
uint64_t event_now_ms(void);

#endif
