/* The C baseline: blocking sendmsg/recvmsg of one fd per message (IO::FDPass's format:
 * one zero byte carrying one fd) between two processes over a socketpair.
 *   baseline throughput N   the child receives N fds and closes each; prints fds per second
 *   baseline pingpong N     N round trips of one fd there and back; prints microseconds each
 * Time runs from the first send until the receiver reports, through a pipe, that it is done. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void send_fd(int sock, int fd) {
  char byte = 0;
  struct iovec iov = {&byte, 1};
  union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof(control.buf);
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
  if (sendmsg(sock, &msg, MSG_NOSIGNAL) != 1) { perror("sendmsg"); exit(1); }
}

static int recv_fd(int sock) {
  char byte;
  struct iovec iov = {&byte, 1};
  union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof(control.buf);
  if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1) { perror("recvmsg"); exit(1); }
  int fd;
  memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
  return fd;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: baseline throughput|pingpong N\n"); return 2; }
  int pingpong = strcmp(argv[1], "pingpong") == 0;
  long n = atol(argv[2]);
  int sv[2], done[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) || pipe(done)) { perror("setup"); return 1; }
  int passed = open("/dev/null", O_RDONLY | O_CLOEXEC);

  pid_t child = fork();
  if (child == 0) {
    for (long i = 0; i < n; i++) {
      int fd = recv_fd(sv[1]);
      if (pingpong) send_fd(sv[1], fd);
      close(fd);
    }
    if (write(done[1], "d", 1) != 1) _exit(1);
    _exit(0);
  }

  double start = now();
  for (long i = 0; i < n; i++) {
    send_fd(sv[0], passed);
    if (pingpong) close(recv_fd(sv[0]));
  }
  char byte;
  if (read(done[0], &byte, 1) != 1) { perror("read"); return 1; }
  double elapsed = now() - start;
  waitpid(child, NULL, 0);
  if (pingpong) printf("%.2f\n", elapsed * 1e6 / n);
  else printf("%.0f\n", n / elapsed);
  return 0;
}
