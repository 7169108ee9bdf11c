/* The C baseline: blocking sendmsg/recvmsg of one fd per message (IO::FDPass's format:
 * one zero byte carrying one fd) between two processes over a socketpair.
 *   baseline throughput N [FDS [BYTES]]   N messages of BYTES bytes (default 1) with FDS fds
 *                           (default 1); the child checks each message's fd count and, from 4
 *                           bytes up, its sequence number, and closes each fd; prints fds per
 *                           second, then "cpu S R": the sender's and the receiver's CPU time
 *                           (user + system) in microseconds per message
 *   baseline throughput N FDS BYTES WINDOW ACK_EVERY
 *                           the same with at most WINDOW messages unacknowledged, the receiver
 *                           acknowledging every ACK_EVERY with a byte back (bench/raw-peer.ts's
 *                           window, which usocket needs)
 *   baseline pingpong N     N round trips of one fd there and back; prints microseconds each
 * Time runs from the first send until the receiver reports, through a pipe, that it is done.
 * A message that arrives wrong ends the run with exit status 1 and a line on stderr. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 253

/* One message: `bytes` bytes of data (at least one) carrying `nfds` copies of fd. */
static void send_message(int sock, int fd, int nfds, const char *data, size_t bytes) {
  struct iovec iov = {(void *)data, bytes};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  } control;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
  for (int i = 0; i < nfds; i++) memcpy(CMSG_DATA(cmsg) + i * sizeof(int), &fd, sizeof(int));
  if (sendmsg(sock, &msg, MSG_NOSIGNAL) != (ssize_t)bytes) {
    perror("sendmsg");
    exit(1);
  }
}

/* Receives one message of `bytes` bytes into data; returns its fds' count, fds in fds. */
static int recv_message(int sock, int *fds, char *data, size_t bytes) {
  struct iovec iov = {data, bytes};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  } control;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof(control.buf);
  ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  if (n <= 0) {
    perror("recvmsg");
    exit(1);
  }
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  int nfds = cmsg ? (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int)) : 0;
  if (nfds) memcpy(fds, CMSG_DATA(cmsg), sizeof(int) * nfds);
  /* A stream may return a large message in parts; the rest carries no fds. */
  for (size_t got = (size_t)n; got < bytes; got += (size_t)n) {
    n = read(sock, data + got, bytes - got);
    if (n <= 0) {
      perror("read");
      exit(1);
    }
  }
  return nfds;
}

static void send_fd(int sock, int fd) {
  char byte = 0;
  send_message(sock, fd, 1, &byte, 1);
}

static int recv_fd(int sock) {
  char byte;
  int fd;
  recv_message(sock, &fd, &byte, 1);
  return fd;
}

/* Reads the acknowledgements that have come (at least one, waiting for it): their count. */
static long read_acks(int sock, char *buffer) {
  ssize_t n = read(sock, buffer, 256);
  if (n <= 0) {
    perror("read");
    exit(1);
  }
  return (long)n;
}

static double cpu_seconds(int who) {
  struct rusage usage;
  getrusage(who, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: baseline throughput|pingpong N [FDS [BYTES [WINDOW ACK_EVERY]]]\n");
    return 2;
  }
  int pingpong = strcmp(argv[1], "pingpong") == 0;
  long n = atol(argv[2]);
  int fds_per_message = argc > 3 ? atoi(argv[3]) : 1;
  size_t bytes = argc > 4 ? (size_t)atol(argv[4]) : 1;
  long window = argc > 5 ? atol(argv[5]) : 0;
  long ack_every = argc > 6 ? atol(argv[6]) : 1;
  if (ack_every < 1 || window < 0) {
    fprintf(stderr, "ACK_EVERY must be at least 1, WINDOW at least 0\n");
    return 2;
  }
  /* As bench/raw-peer.ts: enough acknowledgements to send the last message, and no more. */
  long acks_needed = window > 0 && n > window ? (n - window + ack_every - 1) / ack_every : 0;
  char *data = calloc(bytes, 1);
  int received[MAX_FDS];
  int sv[2], done[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) || pipe(done)) {
    perror("setup");
    return 1;
  }
  int passed = open("/dev/null", O_RDONLY | O_CLOEXEC);

  pid_t child = fork();
  if (child == 0) {
    /* Each process keeps only its own ends, so that either one's exit is EOF or EPIPE to the other.
     */
    close(sv[0]);
    close(done[0]);
    for (long i = 0; i < n; i++) {
      if (pingpong) {
        int fd = recv_fd(sv[1]);
        send_fd(sv[1], fd);
        close(fd);
        continue;
      }
      int nfds = recv_message(sv[1], received, data, bytes);
      for (int k = 0; k < nfds; k++) close(received[k]);
      uint32_t sequence = (uint32_t)i;
      if (bytes >= sizeof sequence) memcpy(&sequence, data, sizeof sequence);
      if (nfds != fds_per_message || (bytes >= sizeof sequence && sequence != (uint32_t)i)) {
        fprintf(stderr, "message %ld: %d fds (of %d), sequence %u\n", i, nfds, fds_per_message,
                (unsigned)sequence);
        _exit(1);
      }
      if ((i + 1) % ack_every == 0 && (i + 1) / ack_every <= acks_needed &&
          write(sv[1], "", 1) != 1) {
        perror("write");
        _exit(1);
      }
    }
    if (write(done[1], "d", 1) != 1) _exit(1);
    _exit(0);
  }

  close(sv[1]);
  close(done[1]);
  double start = now();
  double cpu_start = cpu_seconds(RUSAGE_SELF);
  long acks = 0;
  char ack_bytes[256];
  for (long i = 0; i < n; i++) {
    while (window > 0 && i - acks * ack_every >= window) acks += read_acks(sv[0], ack_bytes);
    if (pingpong) {
      send_fd(sv[0], passed);
      close(recv_fd(sv[0]));
    } else {
      uint32_t sequence = (uint32_t)i;
      if (bytes >= sizeof sequence) memcpy(data, &sequence, sizeof sequence);
      send_message(sv[0], passed, fds_per_message, data, bytes);
    }
  }
  double cpu_sender = cpu_seconds(RUSAGE_SELF) - cpu_start;
  /* Every acknowledgement read, as bench/raw-peer.ts's sender does. */
  while (acks < acks_needed) acks += read_acks(sv[0], ack_bytes);
  char byte;
  /* A receiver that found a message wrong exits without writing: read() sees EOF. */
  if (read(done[0], &byte, 1) != 1) {
    fprintf(stderr, "the receiver failed\n");
    return 1;
  }
  double elapsed = now() - start;
  int status;
  waitpid(child, &status, 0);
  if (pingpong)
    printf("%.2f\n", elapsed * 1e6 / n);
  else
    printf("%.0f\ncpu %.3f %.3f\n", n * fds_per_message / elapsed, cpu_sender * 1e6 / n,
           cpu_seconds(RUSAGE_CHILDREN) * 1e6 / n);
  return 0;
}
