/* reply.h - the JSON text of every answer to one client or one HTTP
 * request: the replies of docs/protocol.md section 3 (welcome, joined,
 * left, ack, history, presence, pong, error) and the bodies of the HTTP
 * API of section 7. Events that fan out are in event.h. ref is the
 * command's ref as JSON text, or "" when it had none; names are validated
 * ids; lists are JSON text. Every function returns malloc'ed,
 * NUL-terminated text with *len set, or NULL when out of memory. Pure;
 * any thread. */
#ifndef WSFAN_REPLY_H
#define WSFAN_REPLY_H

#include <stddef.h>

/* {"type":"welcome","session":S,"user":U|null,"node":N,"heartbeat":H},
 * with ,"exp":E after heartbeat when exp (JSON text: a number or null) is
 * not NULL: a connection with a token. */
char *reply_welcome(const char *session, const char *user, const char *node, int heartbeat, const char *exp,
                    size_t *len);

/* {"type":"joined",ref,"room":R,"offset":O|null,"recovered":B,"missed":N} */
char *reply_joined(const char *ref, const char *room, const char *offset, int recovered, size_t missed,
                   size_t *len);

/* {"type":"left",ref,"room":R}, with ,"reason":W when reason is not NULL
 * (a room the connection may no longer join). */
char *reply_left(const char *ref, const char *room, const char *reason, size_t *len);

/* {"type":"refreshed",ref,"exp":E}; exp is JSON text, a number or null. */
char *reply_refreshed(const char *ref, const char *exp, size_t *len);

/* {"type":"ack",ref} for send and broadcast; with room_ack set,
 * {"type":"ack",ref,"offset":O|null} for a room publish (offset NULL or
 * "" for null). */
char *reply_ack(const char *ref, int room_ack, const char *offset, size_t *len);

/* {"type":"history",ref,"room":R,"messages":[events]}; events is the
 * inside of the array. */
char *reply_history(const char *ref, const char *room, const char *events, size_t events_len, size_t *len);

/* {"type":"presence",ref,"room":R,"users":users} */
char *reply_presence(const char *ref, const char *room, const char *users, size_t *len);

/* {"type":"pong",ref} */
char *reply_pong(const char *ref, size_t *len);

/* {"type":"error",ref,"code":C,"message":M}; message is escaped here. */
char *reply_error(const char *ref, const char *code, const char *message, size_t *len);

/* ---- HTTP API bodies ---------------------------------------------------- */

/* {"error":C,"message":M} */
char *reply_api_error(const char *code, const char *message, size_t *len);
/* {"offset":O|null} */
char *reply_api_published(const char *offset, size_t *len);
/* {"local":N}: a disconnect's connections on this node */
char *reply_api_disconnected(unsigned long local, size_t *len);
/* {"room":R,"messages":[events]} */
char *reply_api_history(const char *room, const char *events, size_t events_len, size_t *len);
/* {"room":R,"users":users} */
char *reply_api_presence(const char *room, const char *users, size_t *len);
/* {"node":N,"rooms":rooms} */
char *reply_api_rooms(const char *node, const char *rooms, size_t *len);

#endif
