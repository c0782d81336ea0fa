/* Child processes watched from the loop (SIGCHLD through libevent): spawn in a process group,
 * captured output, timeouts, environments, process trees. */
#ifndef SGPU_ENGINE_PROC_H
#define SGPU_ENGINE_PROC_H

#include <stdbool.h>

struct engine;

struct proc_spec {
    const char *const *argv; /* argv[0] is the program (execvp) */
    const char *const *env;  /* full environment (NULL-terminated) */
    const char *cwd;         /* NULL = inherit */
    const char *log_path;    /* stdout+stderr appended here; NULL = /dev/null (unless capture) */
    bool capture;            /* capture stdout (first 4 KiB) instead */
    double timeout_s;        /* > 0: SIGKILL the group after this */
};
/* exit_status: waitpid status; out: captured stdout (NUL-terminated, may be ""). */
typedef void (*proc_done_fn)(struct engine *e, void *arg, int exit_status, const char *out);
int proc_init(struct engine *e);
void proc_fini(struct engine *e);
/* Spawn in a new process group (pgid = pid).  Returns pid or -1. */
int proc_spawn(struct engine *e, const struct proc_spec *s, proc_done_fn fn, void *arg);
/* Forget the callback of a running child (it is still reaped). */
void proc_detach(int pid);
/* Build an environment: the engine's environ plus/overriding `extra` ("K=V" strings). */
char **proc_env_build(const char *const *extra, size_t nextra);
void proc_env_free(char **env);
/* Signal a process, its descendants and the groups they lead (e.g. a launcher's model). */
void proc_kill_tree(int pid, int sig);
/* Start time of a process from /proc (0 if it does not exist). */
unsigned long long proc_start_time(int pid);

#endif
