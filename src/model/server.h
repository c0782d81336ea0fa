/* sgpu-model serve: HTTP front end (TGI + OpenAI APIs, /health, /metrics). */
#ifndef SGPU_MODEL_SERVER_H
#define SGPU_MODEL_SERVER_H

#include <stdio.h>

/* sgpu-model serve: argv[0] is the subcommand or the program, options from argv[1]; returns the
 * exit status.  --help is the caller's (main.c prints the usage). */
int serve_main(int argc, char **argv);
/* The serve options' help rows. */
void serve_usage(FILE *out);

#endif
