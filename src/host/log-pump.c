/*
 * kts-log-pump: one container's stdout and stderr, written into its log file in CRI's log format
 * (what kubelet and containerd write, and crictl reads):
 *   <RFC3339Nano time> <stdout|stderr> <F|P> <text>\n
 * F ends a line of the container's output; P is part of a line whose rest follows in later records
 * (a line longer than MAX_LINE, a line left unfinished for FLUSH_MS, or the unfinished end of the
 * output). The time is when the line's first byte was read here.
 *
 * It makes the two FIFOs (0600) that become the container's stdout and stderr, opens their read ends
 * and prints "ready\n"; then it runs in a session of its own, outliving the daemon (a container keeps
 * being logged while no daemon runs), until both FIFOs reached end of file (every writer, the
 * container and whatever inherited its stdio, is gone), or SIGTERM. Before a writer ever came, it also
 * ends once its FIFOs were unlinked (the container's directory was removed: its create never happened).
 * On exit it unlinks the FIFOs, which tells the daemon the log is complete.
 *
 * Everything read is the container's: copied through fixed buffers, split at newlines and never
 * interpreted. Memory is bounded (MAX_LINE per stream); a write error (a full disk) drops records but
 * never stops the reading, so the container never blocks on its output.
 *
 * Usage: kts-log-pump --log <file> --stdout <fifo> --stderr <fifo>
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* containerd's default max_container_log_line_size. */
#define MAX_LINE 16384
#define FLUSH_MS 200
#define UNLINK_CHECK_MS 1000
#define TIME_LEN 30 /* 2006-01-02T15:04:05.123456789Z */

struct stream {
  const char *name;
  const char *path;
  int fd;
  int done;
  size_t len;
  struct timespec start; /* when buf[0] was read */
  char buf[MAX_LINE];
};

static int log_fd = -1;
static volatile sig_atomic_t terminated = 0;
static char record[TIME_LEN + 16 + MAX_LINE + 2];

static void die(const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  fputs("kts-log-pump: ", stderr);
  vfprintf(stderr, fmt, args);
  fputc('\n', stderr);
  va_end(args);
  exit(1);
}

static void on_term(int sig) {
  (void)sig;
  terminated = 1;
}

static struct timespec now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

static long long elapsed_ms(struct timespec from, struct timespec to) {
  return (long long)(to.tv_sec - from.tv_sec) * 1000 + (to.tv_nsec - from.tv_nsec) / 1000000;
}

/* One record in one write: O_APPEND keeps it whole beside the daemon's own notices and across copy-truncate. */
static void write_record(const struct stream *s, char tag, const char *text, size_t len, struct timespec at) {
  struct tm tm;
  gmtime_r(&at.tv_sec, &tm);
  int head = snprintf(record, TIME_LEN + 16 + 1, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ %s %c ", tm.tm_year + 1900, tm.tm_mon + 1,
                      tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, at.tv_nsec, s->name, tag);
  if (head < 0) return;
  memcpy(record + head, text, len);
  record[head + len] = '\n';
  size_t total = (size_t)head + len + 1, off = 0;
  while (off < total) {
    ssize_t n = write(log_fd, record + off, total - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return; /* a full disk or a removed log: this record is lost, the reading goes on */
    off += (size_t)n;
  }
}

/* Complete lines as F records; a full buffer as a P record; the unfinished rest stays. */
static void emit_lines(struct stream *s, struct timespec read_at) {
  size_t begin = 0;
  for (;;) {
    char *newline = memchr(s->buf + begin, '\n', s->len - begin);
    if (!newline) break;
    size_t end = (size_t)(newline - s->buf);
    write_record(s, 'F', s->buf + begin, end - begin, begin == 0 ? s->start : read_at);
    begin = end + 1;
  }
  if (begin > 0) {
    memmove(s->buf, s->buf + begin, s->len - begin);
    s->len -= begin;
    s->start = read_at;
  }
  if (s->len == MAX_LINE) {
    write_record(s, 'P', s->buf, s->len, s->start);
    s->len = 0;
  }
}

static void flush_partial(struct stream *s) {
  if (s->len == 0) return;
  write_record(s, 'P', s->buf, s->len, s->start);
  s->len = 0;
}

/* Reads what is there; returns 0 at end of file (no writer left), 1 otherwise. */
static int pump(struct stream *s) {
  for (;;) {
    ssize_t n = read(s->fd, s->buf + s->len, MAX_LINE - s->len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return 1; /* EAGAIN: drained for now */
    if (n == 0) return 0;
    struct timespec at = now();
    if (s->len == 0) s->start = at;
    s->len += (size_t)n;
    emit_lines(s, at);
  }
}

static void finish(struct stream *s) {
  flush_partial(s);
  close(s->fd);
  s->fd = -1;
  s->done = 1;
}

static int unlinked(const struct stream *s) {
  struct stat st;
  return fstat(s->fd, &st) == 0 && st.st_nlink == 0;
}

static void open_fifo(struct stream *s) {
  if (mkfifo(s->path, 0600) < 0) die("mkfifo %s: %s", s->path, strerror(errno));
  /* Non-blocking: the open returns without a writer, and Linux reports no hang-up until one came and went. */
  s->fd = open(s->path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (s->fd < 0) die("open %s: %s", s->path, strerror(errno));
}

int main(int argc, char **argv) {
  const char *log_path = NULL;
  static struct stream streams[2] = {{.name = "stdout", .fd = -1}, {.name = "stderr", .fd = -1}};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--log") == 0) log_path = argv[i + 1];
    else if (strcmp(argv[i], "--stdout") == 0) streams[0].path = argv[i + 1];
    else if (strcmp(argv[i], "--stderr") == 0) streams[1].path = argv[i + 1];
    else die("unknown option %s", argv[i]);
  }
  if (!log_path || !streams[0].path || !streams[1].path) die("usage: kts-log-pump --log <file> --stdout <fifo> --stderr <fifo>");
  signal(SIGPIPE, SIG_IGN);
  struct sigaction term = {.sa_handler = on_term}; /* no SA_RESTART: poll returns EINTR */
  sigaction(SIGTERM, &term, NULL);
  sigaction(SIGINT, &term, NULL);

  log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (log_fd < 0) die("open %s: %s", log_path, strerror(errno));
  for (int i = 0; i < 2; i++) open_fifo(&streams[i]);
  if (write(STDOUT_FILENO, "ready\n", 6) != 6) die("write ready: %s", strerror(errno));
  /* The daemon stops listening once ready: nothing more goes to its pipes. */
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) {
    dup2(devnull, STDIN_FILENO);
    dup2(devnull, STDOUT_FILENO);
    dup2(devnull, STDERR_FILENO);
    close(devnull);
  }

  int writer_seen = 0;
  struct timespec last_unlink_check = now();
  while (!(streams[0].done && streams[1].done)) {
    int timeout = UNLINK_CHECK_MS;
    struct timespec t = now();
    for (int i = 0; i < 2; i++) {
      if (streams[i].done || streams[i].len == 0) continue;
      long long left = FLUSH_MS - elapsed_ms(streams[i].start, t);
      if (left < timeout) timeout = left < 0 ? 0 : (int)left;
    }
    struct pollfd fds[2] = {{.fd = streams[0].fd, .events = POLLIN}, {.fd = streams[1].fd, .events = POLLIN}};
    int polled = poll(fds, 2, timeout);
    if (terminated) break;
    if (polled < 0 && errno != EINTR) die("poll: %s", strerror(errno));
    t = now();
    for (int i = 0; i < 2 && polled > 0; i++) {
      if (streams[i].done || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      writer_seen = 1;
      if (!pump(&streams[i])) finish(&streams[i]);
    }
    for (int i = 0; i < 2; i++)
      if (!streams[i].done && streams[i].len > 0 && elapsed_ms(streams[i].start, t) >= FLUSH_MS) flush_partial(&streams[i]);
    if (!writer_seen && elapsed_ms(last_unlink_check, t) >= UNLINK_CHECK_MS) {
      last_unlink_check = t;
      if (unlinked(&streams[0]) && unlinked(&streams[1])) break;
    }
  }
  /* SIGTERM, or an abandoned create: what is already in the FIFOs still goes to the log. */
  for (int i = 0; i < 2; i++) {
    if (streams[i].done) continue;
    pump(&streams[i]);
    finish(&streams[i]);
  }
  for (int i = 0; i < 2; i++) unlink(streams[i].path);
  return 0;
}
