/* access_log.h - one log line per connection event (docs/operations.md,
 * "Logs"): a WebSocket session opened, a session closed, and each HTTP
 * answer (an API request, a refused handshake, a connection refused or
 * timed out before its request, any other page). Every line names the
 * session ("<worker>.<seq>", the id of the welcome event) and the client
 * address. Sessions and refusals are logged at debug, or at info with
 * --log-connections; requests to /api/ paths at info; other answers at debug.
 * Never logs a query string, a header but Origin, or a body, so tokens and
 * API keys stay out. Worker thread only. */
#ifndef WSFAN_ACCESS_LOG_H
#define WSFAN_ACCESS_LOG_H

struct auth_result;
struct client;
struct http_request;

/* c answered req with 101: its session starts as who. */
void access_log_opened(const struct client *c, const struct http_request *req, const struct auth_result *who);

/* c's session ends (its conn's close code and reason are set). */
void access_log_closed(const struct client *c);

/* c answers status to its current request, if it has one (none when it is
 * refused at accept, or when its request is not complete); reason is the
 * text of a refusal, or NULL. */
void access_log_answer(const struct client *c, int status, const char *reason);

#endif
