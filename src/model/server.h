/* sgpu-model serve: HTTP front end (TGI + OpenAI APIs, /health, /metrics). */
#ifndef SGPU_MODEL_SERVER_H
#define SGPU_MODEL_SERVER_H

int serve_main(int argc, char **argv);

#endif
