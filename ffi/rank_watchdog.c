/* rank_watchdog.c — liveness of the other ranks of a tensor-parallel group while this process may be blocked inside a
 * collective (where no event loop runs and no signal handler can): rank 0 listens, every other rank connects, and a
 * thread per connection waits on it. When an end closes (its process died) this process prints `message` and exits, so a
 * dead rank never leaves the others hanging in an all_sum. A clean shutdown disarms first; a close seen while armed
 * gets a short grace to be disarmed (the ranks stop together) before it counts. In libdbc_mlx only. */
#define _DEFAULT_SOURCE /* getaddrinfo, usleep under -std=c11 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "mlx_distributed.h"
#include "mlx_internal.h"

#define GRACE_MS 2000
#define EXIT_RANK_LOST 75

static volatile int armed;
static char lost_message[512];

static void lost(void) {
  for (int waited = 0; waited < GRACE_MS && armed; waited += 50) usleep(50 * 1000);
  if (!armed) return;
  fprintf(stderr, "%s\n", lost_message);
  fflush(stderr);
  _exit(EXIT_RANK_LOST);
}

/* Waits until every fd has hung up or failed; the first one that does ends the process (unless disarmed). */
static void watch(int* fds, int n) {
  struct pollfd p[64];
  for (int i = 0; i < n; i++) p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
  for (;;) {
    int rc = poll(p, (nfds_t)n, -1);
    if (rc < 0 && errno == EINTR) continue;
    for (int i = 0; i < n; i++) {
      if (!p[i].revents) continue;
      char b[64];
      ssize_t got = recv(p[i].fd, b, sizeof b, 0);
      if (got > 0) continue; /* nobody sends data; ignore it */
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      lost();
      p[i].fd = -1; /* disarmed: stop watching this one */
    }
  }
}

typedef struct {
  int listener;
  int expected;
} accept_job;

static void* accept_thread(void* arg) {
  accept_job job = *(accept_job*)arg;
  free(arg);
  int fds[64];
  int n = 0;
  while (n < job.expected) {
    int fd = accept(job.listener, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return NULL;
    }
    fds[n++] = fd;
  }
  close(job.listener);
  watch(fds, n);
  return NULL;
}

static void* connect_thread(void* arg) {
  int fd = (int)(intptr_t)arg;
  watch(&fd, 1);
  return NULL;
}

static int start(void* (*fn)(void*), void* arg) {
  pthread_t t;
  if (pthread_create(&t, NULL, fn, arg) != 0) return mlx_glue_fail(DBC_E_STATE, "watchdog: cannot start a thread");
  pthread_detach(t);
  return DBC_OK;
}

static void remember(const char* message) {
  snprintf(lost_message, sizeof lost_message, "%s", message && *message ? message : "a tensor-parallel rank went away");
  armed = 1;
}

int dbc_dist_watchdog_listen(int32_t expected, const char* message, int32_t* port_out) {
  if (expected < 1 || expected > 64) return mlx_glue_fail(DBC_E_ARG, "watchdog: 1 to 64 ranks");
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return mlx_glue_fail(DBC_E_STATE, "watchdog: socket failed");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY), .sin_port = 0};
  socklen_t len = sizeof a;
  if (bind(fd, (struct sockaddr*)&a, sizeof a) != 0 || listen(fd, expected) != 0 || getsockname(fd, (struct sockaddr*)&a, &len) != 0) {
    close(fd);
    return mlx_glue_fail(DBC_E_STATE, "watchdog: cannot listen");
  }
  accept_job* job = malloc(sizeof *job);
  if (!job) return close(fd), mlx_glue_fail(DBC_E_NOMEM, "out of memory");
  *job = (accept_job){.listener = fd, .expected = expected};
  *port_out = ntohs(a.sin_port);
  remember(message);
  return start(accept_thread, job);
}

int dbc_dist_watchdog_connect(const char* host, int32_t port, const char* message) {
  char service[16];
  snprintf(service, sizeof service, "%d", port);
  struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
  if (getaddrinfo(host, service, &hints, &res) != 0 || !res) return mlx_glue_fail(DBC_E_ARG, "watchdog: cannot resolve rank 0's host");
  int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
  int rc = fd < 0 ? -1 : connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0) {
    if (fd >= 0) close(fd);
    return mlx_glue_fail(DBC_E_STATE, "watchdog: cannot connect to rank 0");
  }
  remember(message);
  return start(connect_thread, (void*)(intptr_t)fd);
}

int dbc_dist_watchdog_disarm(void) {
  armed = 0;
  return DBC_OK;
}
