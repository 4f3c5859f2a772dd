/* token_cmd.h - `wsfan token`: prints an HS256 token for --auth jwt
 * (docs/protocol.md section 1a), signed with WSFAN_JWT_SECRET or
 * --jwt-secret, for development and for services that hand out tokens from
 * the shell. Part of the composition root; runs instead of the server. */
#ifndef WSFAN_TOKEN_CMD_H
#define WSFAN_TOKEN_CMD_H

/* argv[0] is "token". Returns the exit status: 0 with the token on stdout,
 * 2 after one line on stderr that names the flag and what to fix. */
int token_cmd_main(int argc, char **argv);

#endif
