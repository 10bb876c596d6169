/* tp_socket.c — blocking TCP for tensor-parallel exchanges (see tp_socket.h). Sockets are non-blocking underneath and
 * every wait is a poll() with the caller's deadline, so a dead or silent peer ends in an error, never a hang; keepalive
 * notices a peer machine that vanished while this side only waits. */
#define _DEFAULT_SOURCE /* getaddrinfo under -std=c11 */
#include "tp_socket.h"
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL /* macOS: SO_NOSIGPIPE on the socket instead */
#define MSG_NOSIGNAL 0
#endif

int dbc_fail(int code, const char* fmt, ...);

#define SPIN_MS 20 /* how long an exchange asks the socket again and again before it sleeps in poll */

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Milliseconds left before deadline (-1: none). */
static int left(int64_t deadline) {
  if (deadline < 0) return -1;
  int64_t l = deadline - now_ms();
  return l < 0 ? 0 : (int)l;
}

static int64_t deadline_for(int timeout_ms) { return timeout_ms < 0 ? -1 : now_ms() + timeout_ms; }

static void close_on_exec(int fd) { fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC); }

static void tune(int fd) {
  int one = 1;
#ifdef SO_NOSIGPIPE
  setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  int idle = 5, interval = 2, count = 3; /* a vanished peer is noticed within ~11 s even while idle */
#if defined(TCP_KEEPIDLE)
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
#elif defined(TCP_KEEPALIVE)
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPALIVE, &idle, sizeof idle);
#endif
#if defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT)
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
#endif
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static struct addrinfo* resolve(const char* host, int port, int passive) {
  char service[16];
  snprintf(service, sizeof service, "%d", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0};
  struct addrinfo* found = NULL;
  int rc = getaddrinfo(host, service, &hints, &found);
  if (rc) {
    dbc_fail(DBC_SOCK_ERROR, "cannot resolve %s: %s", host, gai_strerror(rc));
    return NULL;
  }
  return found;
}

int dbc_sock_listen(const char* host, int port, int* bound_port) {
  struct addrinfo* a = resolve(host, port, 1);
  if (!a) return DBC_SOCK_ERROR;
  int fd = socket(a->ai_family, SOCK_STREAM, 0);
  int one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) || bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, 16)) {
    int e = errno;
    if (fd >= 0) close(fd);
    freeaddrinfo(a);
    return dbc_fail(DBC_SOCK_ERROR, "cannot listen on %s:%d: %s", host, port, strerror(e));
  }
  freeaddrinfo(a);
  close_on_exec(fd);
  struct sockaddr_storage s;
  socklen_t len = sizeof s;
  getsockname(fd, (struct sockaddr*)&s, &len);
  *bound_port = ntohs(s.ss_family == AF_INET6 ? ((struct sockaddr_in6*)&s)->sin6_port : ((struct sockaddr_in*)&s)->sin_port);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

/* Waits for events on fd until the deadline: 1 ready, DBC_SOCK_TIMEOUT, DBC_SOCK_ERROR. */
static int wait_for(int fd, short events, int64_t deadline, short* revents) {
  for (;;) {
    struct pollfd p = {.fd = fd, .events = events};
    int rc = poll(&p, 1, left(deadline));
    if (rc > 0) return *revents = p.revents, 1;
    if (rc == 0) return DBC_SOCK_TIMEOUT;
    if (errno != EINTR) return dbc_fail(DBC_SOCK_ERROR, "poll: %s", strerror(errno));
  }
}

int dbc_sock_accept(int listener, int timeout_ms) {
  int64_t deadline = deadline_for(timeout_ms);
  for (;;) {
    int fd = accept(listener, NULL, NULL);
    if (fd >= 0) return close_on_exec(fd), tune(fd), fd;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) return dbc_fail(DBC_SOCK_ERROR, "accept: %s", strerror(errno));
    short ev;
    int rc = wait_for(listener, POLLIN, deadline, &ev);
    if (rc == DBC_SOCK_TIMEOUT) return dbc_fail(DBC_SOCK_TIMEOUT, "no connection within %d ms", timeout_ms);
    if (rc < 0) return rc;
  }
}

int dbc_sock_connect(const char* host, int port, int timeout_ms) {
  struct addrinfo* a = resolve(host, port, 0);
  if (!a) return DBC_SOCK_ERROR;
  int fd = socket(a->ai_family, SOCK_STREAM, 0);
  if (fd < 0) {
    freeaddrinfo(a);
    return dbc_fail(DBC_SOCK_ERROR, "socket: %s", strerror(errno));
  }
  close_on_exec(fd);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  int rc = connect(fd, a->ai_addr, a->ai_addrlen);
  freeaddrinfo(a);
  if (rc && errno == EINPROGRESS) {
    short ev;
    rc = wait_for(fd, POLLOUT, deadline_for(timeout_ms), &ev);
    if (rc == DBC_SOCK_TIMEOUT) return close(fd), dbc_fail(DBC_SOCK_TIMEOUT, "%s:%d did not answer within %d ms", host, port, timeout_ms);
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    errno = err;
    rc = err ? -1 : 0;
  }
  if (rc) {
    int e = errno;
    close(fd);
    return dbc_fail(e == ECONNREFUSED ? DBC_SOCK_CLOSED : DBC_SOCK_ERROR, "cannot connect to %s:%d: %s", host, port, strerror(e));
  }
  tune(fd);
  return fd;
}

int dbc_sock_exchange(int fd, const void* out, int64_t n, void* in, int64_t m, int timeout_ms) {
  const char* o = out;
  char* i = in;
  int64_t sent = 0, got = 0, deadline = deadline_for(timeout_ms);
  int64_t spin_until = now_ms() + SPIN_MS;
  while (sent < n || got < m) {
    short ev = 0;
    int rc;
    if (now_ms() < spin_until) {
      /* the peer is mid-layer and answers within microseconds to a few ms: asking again costs less than sleeping in
       * poll, whose wake-up on a virtual machine's idle vCPU can take far longer than the wait itself */
      rc = 1;
      ev = (short)((sent < n ? POLLOUT : 0) | (got < m ? POLLIN : 0));
    } else {
      rc = wait_for(fd, (short)((sent < n ? POLLOUT : 0) | (got < m ? POLLIN : 0)), deadline, &ev);
    }
    if (rc == DBC_SOCK_TIMEOUT)
      return dbc_fail(DBC_SOCK_TIMEOUT, "the peer went silent: %lld of %lld bytes sent, %lld of %lld received within %d ms", (long long)sent, (long long)n, (long long)got, (long long)m, timeout_ms);
    if (rc < 0) return rc;
    if (got < m && (ev & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t k = recv(fd, i + got, (size_t)(m - got), MSG_DONTWAIT);
      if (k == 0) return dbc_fail(DBC_SOCK_CLOSED, "the peer closed the connection (%lld of %lld bytes received)", (long long)got, (long long)m);
      if (k > 0) got += k;
      else if (errno == ECONNRESET || errno == EPIPE) return dbc_fail(DBC_SOCK_CLOSED, "the peer reset the connection");
      else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return dbc_fail(DBC_SOCK_ERROR, "recv: %s", strerror(errno));
    }
    if (sent < n && (ev & (POLLOUT | POLLHUP | POLLERR))) {
      ssize_t k = send(fd, o + sent, (size_t)(n - sent), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (k > 0) sent += k;
      else if (errno == ECONNRESET || errno == EPIPE) return dbc_fail(DBC_SOCK_CLOSED, "the peer closed the connection (%lld of %lld bytes sent)", (long long)sent, (long long)n);
      else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return dbc_fail(DBC_SOCK_ERROR, "send: %s", strerror(errno));
    }
  }
  return 0;
}

int dbc_sock_peer_gone(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, 0) <= 0) return 0;
  if (p.revents & (POLLERR | POLLNVAL)) return 1;
  char byte;
  ssize_t k = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (k == 0) return 1;
  return k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

int dbc_sock_close(int fd) { return close(fd) ? dbc_fail(DBC_SOCK_ERROR, "close: %s", strerror(errno)) : 0; }
