/* sgpu-launch internals: one supervisor process per instance.
 *
 *   main.c    options, environment, workspace/lock/ports, state machine
 *   proc.c    spawning children in their own process groups, output relays
 *   logs.c    log rotation (<log>.old), reopen on SIGHUP, tee of our own lines
 *   tlsgen.c  TLS key + self-signed certificate or CSR (OpenSSL libcrypto)
 *   report.c  /worker_status/ error reports to every REPORT_ADDR
 */
#ifndef SGPU_LAUNCH_H
#define SGPU_LAUNCH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <event2/event.h>

#include "sbuf.h"

struct hclient;

/* ---- logs.c ---- */

/* Appends the current content of `path` to `path`.old and truncates `path`
 * (what the reference start_server.sh does).  Missing file: nothing to do.
 * 0 or -1 with errno. */
int logs_rotate(const char *path);
/* Opens `path` for appending (O_CLOEXEC, 0644).  -1 with errno. */
int logs_open(const char *path);
/* Reopens `path` onto the existing descriptor `fd` (dup2), so every holder of
 * `fd` writes to the new file from now on.  0 or -1. */
int logs_reopen(int fd, const char *path);
/* A FILE that writes every line to `fd` and, if `also_stderr`, to stderr. */
FILE *logs_tee_open(int *fd, bool also_stderr);

/* ---- proc.c ---- */

/* Copies a child's output pipe into a log descriptor as data arrives.  With
 * `whole_lines`, partial lines are held back until their newline (so the
 * launcher's own lines never split a child's line).  Frees itself at EOF. */
struct relay;
struct relay *relay_new(struct event_base *base, int pipe_fd, const int *dst_fd, bool whole_lines);
/* With whole_lines: keep the child's last non-empty output line in `buf` (NUL-terminated). */
void relay_track_last_line(struct relay *r, char *buf, size_t n);
void relay_free_all(void);

struct spawn_opts {
    const char *const *argv; /* argv[0] = program path (or /bin/sh) */
    const char *cwd;
    const int *log_fd; /* output destination (through a relay) */
    bool whole_lines;
    int pdeath_sig;  /* signal the child gets if the launcher dies */
    bool own_group;  /* new process group (pgid = pid) instead of the launcher's */
    char *last_line; /* optional: receives the last output line (whole_lines only) */
    size_t last_line_len;
};
/* fork + exec; stdin = /dev/null; stdout+stderr go to a pipe relayed into
 * *log_fd.  Returns the pid (= process group id with own_group) or -1. */
pid_t proc_spawn(struct event_base *base, const struct spawn_opts *o);
/* Signal a child's whole process group if it leads one, else the child. */
void proc_signal(pid_t pgid, int sig);

/* Finds a program: next to our own executable first, then $PATH.  `name` with
 * a '/' is used as given.  Writes the path into out; 0 or -1. */
int proc_find_program(const char *name, char *out, size_t n);

/* ---- tlsgen.c ---- */

/* Generates an RSA-2048 key (written 0600) and a self-signed certificate
 * valid 365 days for CN=`cn` with subjectAltName IP/DNS entries for
 * 127.0.0.1, localhost and `ip` (if not NULL/empty).  0 or -1 (msg filled). */
int tls_make_self_signed(const char *key_path, const char *cert_path, const char *cn,
                         const char *ip, char *msg, size_t msglen);
/* Generates the key (0600) and a PEM CSR (subject CN=`cn`) into *csr. */
int tls_make_csr(const char *key_path, const char *cn, struct sbuf *csr, char *msg, size_t msglen);
/* True if `pem` holds a parseable X.509 certificate. */
bool tls_is_cert(const char *pem, size_t len);

/* ---- report.c ---- */

/* JSON body of an error report:
 * {"id": <CONTAINER_ID as int, else 0>, "mtoken": "...", "version": "...",
 *  "error_msg": "...", "url": "..."}  (docs/protocol.md §4.4, but escaped). */
void report_error_body(struct sbuf *out, const char *error_msg);
/* The worker URL as the worker reports it (http[s]://PUBLIC_IPADDR:VAST_TCP_PORT_<WORKER_PORT>),
 * or $URL, or "". */
void report_worker_url(char *out, size_t n);
/* Posts the error to every address in REPORT_ADDR (comma list), each up to 3
 * attempts 2 s apart; calls done(arg, nsent) once all have finished. */
int report_error_send(struct event_base *base, struct hclient *hc, const char *error_msg,
                      void (*done)(void *arg, int nsent), void *arg);

/* Append a JSON string literal (quotes included, ASCII-only escaping). */
void json_put_string(struct sbuf *out, const char *s);

#endif
