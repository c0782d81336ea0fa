/* Signing threads for the per-request schemes (fields-v2 / fields-v1): one RSA-2048 signature
 * per grant costs ~260 µs, which caps one loop thread at ~3.8k routes/s.  With
 * --sign-threads N the router hands the message to a pool of N threads (each with its own copy
 * of the key, loaded from the key file); when an eventfd says a signature is done, the loop
 * calls the router back with it and the router sends the answer.  Everything else (choosing
 * the worker, reqnum, bookkeeping, the answer) stays on the loop thread, so grants keep their
 * order per worker.  This file signs; it never answers a request. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "b64.h"
#include "engine.h"
#include "log.h"
#include "rsa.h"
#include "signpool.h"
#include "xalloc.h"

struct signjob {
    struct sbuf msg, sig;
    signpool_done_fn fn;
    void *arg;
    int rc;
    struct signjob *next;
};

struct signpool {
    struct engine *e;
    pthread_t *threads;
    int n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct signjob *todo_head, *todo_tail;
    struct signjob *done; /* LIFO is fine: answers are independent */
    bool stop;
    int efd;
    struct event *ev;
    char keypath[600];
};

static void *sign_thread(void *arg)
{
    struct signpool *p = arg;
    struct rsa_privkey *key = NULL;
    int load_rc = rsa_privkey_load_file(p->keypath, &key);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->todo_head && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!p->todo_head) { /* stop and nothing left */
            pthread_mutex_unlock(&p->mu);
            break;
        }
        struct signjob *j = p->todo_head;
        p->todo_head = j->next;
        if (!p->todo_head) p->todo_tail = NULL;
        pthread_mutex_unlock(&p->mu);

        j->rc = -1;
        uint8_t sig[1024];
        size_t siglen = sizeof sig;
        if (load_rc == 0 && rsa_privkey_size(key) <= sizeof sig &&
            rsa_sign_sha256(key, j->msg.data, j->msg.len, sig, &siglen) == 0) {
            char b64[1400];
            size_t n = b64_encode(sig, siglen, b64);
            sbuf_append(&j->sig, b64, n);
            j->rc = 0;
        }
        pthread_mutex_lock(&p->mu);
        j->next = p->done;
        p->done = j;
        pthread_mutex_unlock(&p->mu);
        uint64_t one = 1;
        ssize_t w = write(p->efd, &one, sizeof one);
        (void)w;
    }
    rsa_privkey_free(key);
    return NULL;
}

static void job_free(struct signjob *j)
{
    sbuf_free(&j->msg);
    sbuf_free(&j->sig);
    free(j);
}

static void answer(struct signjob *j)
{
    j->fn(j->arg, j->rc, j->rc == 0 ? j->sig.data : NULL, j->rc == 0 ? j->sig.len : 0);
    job_free(j);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct signpool *p = arg;
    (void)what;
    uint64_t v;
    while (read(fd, &v, sizeof v) == (ssize_t)sizeof v) {
    }
    pthread_mutex_lock(&p->mu);
    struct signjob *list = p->done;
    p->done = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list) {
        struct signjob *n = list->next;
        answer(list);
        list = n;
    }
}

int signpool_start(struct engine *e, int n, const char *keypath)
{
    if (n <= 0) return 0;
    struct signpool *p = xcalloc(1, sizeof *p);
    p->e = e;
    snprintf(p->keypath, sizeof p->keypath, "%s", keypath);
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0) {
        free(p);
        return -1;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->ev = xnonnull(event_new(e->base, p->efd, EV_READ | EV_PERSIST, on_done, p));
    event_add(p->ev, NULL);
    p->threads = xcalloc((size_t)n, sizeof *p->threads);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&p->threads[i], NULL, sign_thread, p) != 0) break;
        p->n++;
    }
    e->signpool = p;
    if (p->n == 0) {
        signpool_stop(e);
        return -1;
    }
    log_info("sign_threads", "n=%d", p->n);
    return 0;
}

void signpool_submit(struct engine *e, struct sbuf *msg, signpool_done_fn fn, void *arg)
{
    struct signpool *p = e->signpool;
    struct signjob *j = xcalloc(1, sizeof *j);
    j->fn = fn;
    j->arg = arg;
    j->msg = *msg; /* taken over */
    *msg = (struct sbuf)SBUF_INIT;
    pthread_mutex_lock(&p->mu);
    if (p->todo_tail)
        p->todo_tail->next = j;
    else
        p->todo_head = j;
    p->todo_tail = j;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void signpool_stop(struct engine *e)
{
    struct signpool *p = e->signpool;
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    on_done(p->efd, EV_READ, p); /* answer what the threads finished */
    event_free(p->ev);
    close(p->efd);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
    e->signpool = NULL;
}
