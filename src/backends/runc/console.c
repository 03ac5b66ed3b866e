/*
 * kts-console: the terminal of one runc process (`runc exec --tty` / `runc create` with a terminal).
 *
 * runc hands the pty master it made over a unix socket (--console-socket) with SCM_RIGHTS, which the
 * Node daemon cannot receive. This process listens on that socket, takes the master, and copies
 *   stdin FIFO (containerd's, optional) -> master,   master -> stdout FIFO (containerd's);
 * a line "<cols> <rows>\n" written to the resize FIFO (made here, 0600) sets the terminal's size (Task ResizePty).
 * It exits once the process's side of the pty is closed and what it wrote is copied (or on SIGTERM),
 * so it lives exactly as long as the terminal it serves, daemon restarts included; and after
 * MASTER_WAIT_MS when runc never connects (a failed exec: the daemon also kills it then).
 *
 * Usage: kts-console --socket <path> --stdout <fifo> --resize <fifo> [--stdin <fifo>]
 * It prints "ready\n" on stdout once the socket listens. Everything the master yields is the
 * container's output: copied as bytes through a fixed buffer, never interpreted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#define BUF_SIZE 32768
/* runc connects within its exec; a console nobody connects to must not wait forever. */
#define MASTER_WAIT_MS 60000

static void die(const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  fputs("kts-console: ", stderr);
  vfprintf(stderr, fmt, args);
  fputc('\n', stderr);
  va_end(args);
  exit(1);
}

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        poll(&p, 1, 1000);
        continue;
      }
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* The pty master runc sends, or -1 when none came within MASTER_WAIT_MS (runc failed first). */
static int receive_master(int listener) {
  struct pollfd ready = {.fd = listener, .events = POLLIN};
  int polled;
  do polled = poll(&ready, 1, MASTER_WAIT_MS);
  while (polled < 0 && errno == EINTR);
  if (polled < 0) die("poll: %s", strerror(errno));
  if (polled == 0) return -1;
  int conn;
  do conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
  while (conn < 0 && errno == EINTR);
  if (conn < 0) die("accept: %s", strerror(errno));
  char name[256];
  struct iovec iov = {.iov_base = name, .iov_len = sizeof name};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  ssize_t n;
  do n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) die("recvmsg: %s", strerror(errno));
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  if (!cmsg || cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS || cmsg->cmsg_len != CMSG_LEN(sizeof(int)))
    die("runc sent no terminal");
  int master;
  memcpy(&master, CMSG_DATA(cmsg), sizeof master);
  close(conn);
  return master;
}

/* "<cols> <rows>" lines; anything else is ignored. */
static void apply_resizes(int master, char *pending, size_t *used, int resize_fd) {
  ssize_t n = read(resize_fd, pending + *used, 255 - *used);
  if (n <= 0) return;
  *used += (size_t)n;
  pending[*used] = '\0';
  char *line = pending, *newline;
  while ((newline = strchr(line, '\n'))) {
    *newline = '\0';
    unsigned cols, rows;
    if (sscanf(line, "%u %u", &cols, &rows) == 2 && cols <= 0xffff && rows <= 0xffff) {
      struct winsize size = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
      ioctl(master, TIOCSWINSZ, &size);
    }
    line = newline + 1;
  }
  *used = strlen(line);
  memmove(pending, line, *used);
  if (*used >= 254) *used = 0; /* a line that long is no size: drop it */
}

int main(int argc, char **argv) {
  const char *socket_path = NULL, *stdout_path = NULL, *stdin_path = NULL, *resize_path = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--socket") == 0) socket_path = argv[i + 1];
    else if (strcmp(argv[i], "--stdout") == 0) stdout_path = argv[i + 1];
    else if (strcmp(argv[i], "--stdin") == 0) stdin_path = argv[i + 1];
    else if (strcmp(argv[i], "--resize") == 0) resize_path = argv[i + 1];
    else die("unknown option %s", argv[i]);
  }
  if (!socket_path || !stdout_path || !resize_path)
    die("usage: kts-console --socket <path> --stdout <fifo> --resize <fifo> [--stdin <fifo>]");
  signal(SIGPIPE, SIG_IGN);

  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(socket_path) >= sizeof addr.sun_path) die("socket path too long: %s", socket_path);
  strcpy(addr.sun_path, socket_path);
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) die("socket: %s", strerror(errno));
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind %s: %s", socket_path, strerror(errno));
  if (listen(listener, 1) < 0) die("listen: %s", strerror(errno));
  if (mkfifo(resize_path, 0600) < 0 && errno != EEXIST) die("mkfifo %s: %s", resize_path, strerror(errno));
  /* Opened read-write, a FIFO never reports end of file between writers. */
  int resize_fd = open(resize_path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (resize_fd < 0) die("open %s: %s", resize_path, strerror(errno));
  if (write_all(STDOUT_FILENO, "ready\n", 6) < 0) die("write ready: %s", strerror(errno));

  int master = receive_master(listener);
  close(listener);
  unlink(socket_path);
  if (master < 0) {
    unlink(resize_path);
    die("runc sent no terminal within %d ms", MASTER_WAIT_MS);
  }
  int out = open(stdout_path, O_WRONLY | O_CLOEXEC);
  if (out < 0) die("open %s: %s", stdout_path, strerror(errno));
  int in = -1;
  if (stdin_path && *stdin_path) {
    in = open(stdin_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (in < 0) die("open %s: %s", stdin_path, strerror(errno));
  }

  static char buf[BUF_SIZE];
  char pending[256];
  size_t used = 0;
  for (;;) {
    struct pollfd fds[3] = {{.fd = master, .events = POLLIN}, {.fd = resize_fd, .events = POLLIN}, {.fd = in, .events = POLLIN}};
    if (poll(fds, in >= 0 ? 3 : 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll: %s", strerror(errno));
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(master, buf, sizeof buf);
      if (n > 0) {
        if (write_all(out, buf, (size_t)n) < 0 && errno != EPIPE) die("write stdout: %s", strerror(errno));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        break; /* EIO: every process holding the terminal's other side has exited */
      }
    }
    if (fds[1].revents & POLLIN) apply_resizes(master, pending, &used, resize_fd);
    if (in >= 0 && (fds[2].revents & (POLLIN | POLLHUP))) {
      ssize_t n = read(in, buf, sizeof buf);
      if (n > 0) {
        write_all(master, buf, (size_t)n);
      } else if (n == 0) {
        /* stdin closed: the terminal's end of file (^D), as a shim sends it. */
        write_all(master, "\x04", 1);
        close(in);
        in = -1;
      }
    }
  }
  unlink(resize_path);
  return 0;
}
