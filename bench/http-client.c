/* The lean load generator of npm run bench:http: one thread, one epoll set, C connections to
 * 127.0.0.1:<port>, each sending `GET /` and waiting for the whole answer before the next.
 * It reads one run per line on stdin, `<port> <close|keep-alive> <seconds> <connections>`,
 * and prints the result as one line of JSON, as bench/http-load.ts does for autocannon:
 *   {"requestsPerSecond":..,"total":..,"errors":..,"timeouts":..,"non2xx":..,
 *    "clientCpuMicroseconds":..}
 * With `close` each request has a connection of its own (`Connection: close`: the server
 * closes, the client reads to EOF, closes, and connects again); with `keep-alive` a
 * connection carries request after request, each answer framed by its Content-Length.
 * An answer counts when it is whole; a refused, reset or cut connection is an error (and the
 * connection starts again); requests still open at the end are neither, and a request older
 * than TIMEOUT_SECONDS by then is a timeout. clientCpuMicroseconds is this process's own CPU
 * time (user and system, getrusage) per answer: it shares the machine with the servers. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNECTIONS 4096
#define BUFFER_BYTES 4096
#define TIMEOUT_SECONDS 10.0

struct connection {
  int fd;
  size_t have;    /* bytes of the current answer in buf */
  size_t sent;    /* bytes of the request written */
  double started; /* when the current request began (its connect, in close mode) */
  char buf[BUFFER_BYTES];
};

struct run {
  struct sockaddr_in address;
  int keep_alive;
  const char *request;
  size_t request_bytes;
  int epoll;
  long total, errors, non2xx;
};

static struct connection connections[MAX_CONNECTIONS];

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec +
         usage.ru_stime.tv_usec / 1e6;
}

/* A new connection for c, its request not yet written (it goes out once connected). */
static void open_connection(struct run *run, struct connection *c) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    perror("socket");
    exit(1);
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->have = 0;
  c->sent = 0;
  c->started = now();
  if (connect(c->fd, (struct sockaddr *)&run->address, sizeof run->address) < 0 &&
      errno != EINPROGRESS) {
    perror("connect");
    exit(1);
  }
  struct epoll_event event = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
  if (epoll_ctl(run->epoll, EPOLL_CTL_ADD, c->fd, &event) < 0) {
    perror("epoll_ctl");
    exit(1);
  }
}

static void close_connection(struct connection *c) {
  close(c->fd); /* also takes it out of the epoll set */
  c->fd = -1;
}

/* Writes what is left of the request; 0 when all of it is out, 1 to wait, -1 on error. */
static int write_request(struct run *run, struct connection *c) {
  while (c->sent < run->request_bytes) {
    ssize_t n = send(c->fd, run->request + c->sent, run->request_bytes - c->sent, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN ? 1 : -1;
    c->sent += n;
  }
  return 0;
}

static void want(struct run *run, struct connection *c, unsigned events) {
  struct epoll_event event = {.events = events, .data.ptr = c};
  epoll_ctl(run->epoll, EPOLL_CTL_MOD, c->fd, &event);
}

/* The length of the whole answer in buf once its head is in, else 0; -1 if it has no
 * Content-Length (this generator reads framed answers only). */
static long answer_length(const char *buf, size_t have) {
  const char *end = memmem(buf, have, "\r\n\r\n", 4);
  if (end == NULL) return 0;
  size_t head = end + 4 - buf;
  for (const char *line = memchr(buf, '\n', head); line != NULL && line < end;
       line = memchr(line + 1, '\n', end - line)) {
    if (strncasecmp(line + 1, "content-length:", 15) == 0)
      return head + strtol(line + 16, NULL, 10);
  }
  return -1;
}

/* A failed connection: counted, and replaced. */
static void failed(struct run *run, struct connection *c) {
  run->errors++;
  close_connection(c);
  open_connection(run, c);
}

/* An answer is whole: counted; the connection asks again, or (close mode) is replaced. */
static void answered(struct run *run, struct connection *c, long length) {
  run->total++;
  if (strncmp(c->buf, "HTTP/1.1 2", 10) != 0) run->non2xx++;
  if (!run->keep_alive) {
    close_connection(c);
    open_connection(run, c);
    return;
  }
  memmove(c->buf, c->buf + length, c->have - length);
  c->have -= length;
  c->sent = 0;
  c->started = now();
  int wrote = write_request(run, c);
  if (wrote < 0)
    failed(run, c);
  else
    want(run, c, wrote == 0 ? EPOLLIN : EPOLLIN | EPOLLOUT);
}

static void on_readable(struct run *run, struct connection *c) {
  for (;;) {
    if (c->have == BUFFER_BYTES) {
      failed(run, c);
      return;
    }
    ssize_t n = recv(c->fd, c->buf + c->have, BUFFER_BYTES - c->have, 0);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      /* EOF: in close mode the server's end of an answer it framed; otherwise a cut. */
      long length = answer_length(c->buf, c->have);
      if (n == 0 && !run->keep_alive && length > 0 && (size_t)length <= c->have)
        answered(run, c, length);
      else
        failed(run, c);
      return;
    }
    c->have += n;
    long length = answer_length(c->buf, c->have);
    if (length < 0) {
      failed(run, c);
      return;
    }
    /* In close mode the answer ends at EOF, so that the server's close is part of it. */
    if (run->keep_alive && length > 0 && (size_t)length <= c->have) {
      answered(run, c, length);
      return;
    }
  }
}

static void on_event(struct run *run, struct connection *c, unsigned events) {
  if (events & EPOLLOUT) {
    int wrote = write_request(run, c);
    if (wrote < 0) {
      failed(run, c);
      return;
    }
    if (wrote == 0) want(run, c, EPOLLIN);
  }
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(run, c);
}

static void run_once(int port, int keep_alive, double seconds, int count) {
  static const char close_request[] =
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  static const char keep_alive_request[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  struct run run = {.keep_alive = keep_alive};
  run.address.sin_family = AF_INET;
  run.address.sin_port = htons(port);
  run.address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  run.request = keep_alive ? keep_alive_request : close_request;
  run.request_bytes = strlen(run.request);
  run.epoll = epoll_create1(EPOLL_CLOEXEC);
  if (run.epoll < 0) {
    perror("epoll_create1");
    exit(1);
  }
  if (count > MAX_CONNECTIONS) count = MAX_CONNECTIONS;

  double cpu = cpu_seconds();
  double start = now();
  double end = start + seconds;
  for (int i = 0; i < count; i++) open_connection(&run, &connections[i]);
  struct epoll_event events[256];
  for (double t = start; t < end; t = now()) {
    int n = epoll_wait(run.epoll, events, 256, (int)((end - t) * 1000) + 1);
    if (n < 0 && errno != EINTR) {
      perror("epoll_wait");
      exit(1);
    }
    for (int i = 0; i < n; i++) on_event(&run, events[i].data.ptr, events[i].events);
  }
  double elapsed = now() - start;
  long timeouts = 0;
  for (int i = 0; i < count; i++) {
    if (end - connections[i].started > TIMEOUT_SECONDS) timeouts++;
    close_connection(&connections[i]);
  }
  close(run.epoll);
  double used = cpu_seconds() - cpu;
  printf(
      "{\"requestsPerSecond\":%.1f,\"total\":%ld,\"errors\":%ld,\"timeouts\":%ld,\"non2xx\":%ld,"
      "\"clientCpuMicroseconds\":%.2f}\n",
      run.total / elapsed, run.total, run.errors, timeouts, run.non2xx,
      run.total > 0 ? used * 1e6 / run.total : 0.0);
  fflush(stdout);
}

int main(void) {
  char line[256];
  while (fgets(line, sizeof line, stdin) != NULL) {
    int port, count;
    double seconds;
    char mode[16];
    if (sscanf(line, "%d %15s %lf %d", &port, mode, &seconds, &count) != 4) continue;
    run_once(port, strcmp(mode, "keep-alive") == 0, seconds, count);
  }
  return 0;
}
