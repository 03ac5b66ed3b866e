/*
 * kts-sandbox-init: the one host process of a runc sandbox.
 *
 * Why it exists: `runc create` detaches, so a container's init is reparented to the nearest
 * child-subreaper ancestor of runc. The Node daemon cannot be that ancestor across its own
 * restarts, so this process is: it runs every runc command of its sandbox as its own child,
 * reaps the orphaned container and exec processes, and records their exit status in files
 * that outlive any daemon.
 *
 * Usage: kts-sandbox-init --dir <sandboxDir> --hostname <name> [--netns <path>]
 *          [--host-network] [--host-ipc] [--host-pid] [--sysctl <name>=<value>]...
 *   --host-network / --host-ipc: the pod uses the host's network / IPC namespace (CRI NamespaceMode NODE);
 *   --host-pid: the holder stays in the host pid namespace;
 *   --sysctl: written through /proc/sys by the holder inside the pod's namespaces, so the kernel applies
 *             a net. value to the pod's netns and a kernel.shm, kernel.msg, kernel.sem or fs.mqueue.
 *             one to its IPC namespace (the daemon refuses names of namespaces the pod shares with the host).
 *
 * Processes:
 *   init (this, host pid namespace, host mount namespace, child subreaper)
 *    └─ holder: pid 1 of the pod's new pid namespace; owns the pod's net/ipc/uts/mnt namespaces,
 *               reaps orphans inside the pod, exits on SIGTERM; dies with the init.
 *    └─ request children: `runc create|exec ...` with the requested stdio, one per ctl line.
 *
 * Files under <dir> (results are written to a temporary name and renamed, so a reader never
 * sees half a file):
 *   holder.pid          the holder's host pid; written last, so its presence means "ready".
 *   ctl                 FIFO, one request per line:
 *                       <reqId>\t<stdin|->\t<stdout|->\t<stderr|->\t<arg0>\t<arg1>...\n
 *   req/<reqId>.exit    "<status>\n" of the request's process.
 *   req/<reqId>.err     why the request could not start (absent when it did).
 *   exits/<pid>         "<status>\n<unix ms>\n" of any other process this init reaped.
 * status is the exit code, or 128 + the signal number.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

#define MAX_REQ_ID 128
#define MAX_FIELDS 512
/* A request must fit in PIPE_BUF to be written atomically; anything longer is a client bug. */
#define LINE_BUF_SIZE (4 * PIPE_BUF)

#define MAX_SYSCTLS 64

struct options {
  const char *dir;
  const char *hostname;
  const char *netns;
  int host_network, host_ipc, host_pid;
  const char *sysctls[MAX_SYSCTLS];
  int sysctl_count;
};

struct request {
  pid_t pid;
  char id[MAX_REQ_ID + 1];
  struct request *next;
};

static struct options opts;
static pid_t holder_pid = -1;
static int signal_fd = -1;
static struct request *running_requests;

static void logf_(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "kts-sandbox-init[%d]: ", (int)getpid());
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "kts-sandbox-init[%d]: fatal: ", (int)getpid());
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

static void path_join(char *out, size_t size, const char *a, const char *b) {
  if ((size_t)snprintf(out, size, "%s/%s", a, b) >= size) die("path too long: %s/%s", a, b);
}

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* tmp + rename: the daemon watches for the final name and must never read a partial file. */
static int write_file_atomic(const char *path, const char *content) {
  char tmp[PATH_MAX];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) return -1;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  int rc = write_all(fd, content, strlen(content));
  if (close(fd) < 0) rc = -1;
  if (rc == 0 && rename(tmp, path) < 0) rc = -1;
  if (rc < 0) {
    logf_("cannot write %s: %s", path, strerror(errno));
    unlink(tmp);
  }
  return rc;
}

static int status_code(int wstatus) {
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return 255;
}

static long long now_unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- holder */

static void bring_up_loopback(void) {
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) die("socket: %s", strerror(errno));
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) die("SIOCGIFFLAGS lo: %s", strerror(errno));
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0) die("SIOCSIFFLAGS lo: %s", strerror(errno));
  close(sock);
}

/*
 * A fresh mount namespace is a copy of every host mount, including other sandboxes' rootfs
 * overlays; keeping those copies would pin them after the host unmounts them. The holder needs
 * no files, so it pivots onto an empty tmpfs and drops the copies.
 */
static void drop_host_mounts(void) {
  if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make / private: %s", strerror(errno));
  if (mount("tmpfs", opts.dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555") < 0)
    die("mount tmpfs: %s", strerror(errno));
  if (chdir(opts.dir) < 0) die("chdir: %s", strerror(errno));
  if (syscall(SYS_pivot_root, ".", ".") < 0) die("pivot_root: %s", strerror(errno));
  if (umount2(".", MNT_DETACH) < 0) die("umount old root: %s", strerror(errno));
  if (chdir("/") < 0) die("chdir /: %s", strerror(errno));
}

/* name=value, name in dots (net.ipv4.ip_forward): written to /proc/sys/net/ipv4/ip_forward of this task's namespaces. */
static void apply_sysctl(const char *entry) {
  const char *eq = strchr(entry, '=');
  size_t name_len = eq ? (size_t)(eq - entry) : 0;
  char path[PATH_MAX] = "/proc/sys/";
  size_t base = strlen(path);
  if (name_len == 0 || base + name_len >= sizeof path) die("--sysctl %s: not <name>=<value>", entry);
  for (size_t i = 0; i < name_len; i++) {
    char c = entry[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.')) die("--sysctl %s: bad name", entry);
    path[base + i] = c == '.' ? '/' : c;
  }
  path[base + name_len] = '\0';
  int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) die("sysctl %.*s: open %s: %s", (int)name_len, entry, path, strerror(errno));
  const char *value = eq + 1;
  if (write_all(fd, value, strlen(value)) < 0) die("sysctl %.*s=%s: %s", (int)name_len, entry, value, strerror(errno));
  close(fd);
}

static void enter_pod_namespaces(void) {
  int flags = CLONE_NEWUTS | CLONE_NEWNS;
  if (!opts.host_ipc) flags |= CLONE_NEWIPC;
  if (!opts.netns && !opts.host_network) flags |= CLONE_NEWNET;
  if (unshare(flags) < 0) die("unshare: %s", strerror(errno));
  if (opts.netns && !opts.host_network) {
    int fd = open(opts.netns, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open netns %s: %s", opts.netns, strerror(errno));
    if (setns(fd, CLONE_NEWNET) < 0) die("setns %s: %s", opts.netns, strerror(errno));
    close(fd);
  }
  if (sethostname(opts.hostname, strlen(opts.hostname)) < 0) die("sethostname: %s", strerror(errno));
  if (!opts.netns && !opts.host_network) bring_up_loopback();
  for (int i = 0; i < opts.sysctl_count; i++) apply_sysctl(opts.sysctls[i]);
  drop_host_mounts();
}

static void holder_main(int ready_fd, int lifeline_fd) {
  /* The pod must not outlive the process that records its exits. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) die("PR_SET_PDEATHSIG: %s", strerror(errno));
  /* The init may have died before PDEATHSIG was armed: then the lifeline pipe has no writer. */
  struct pollfd lifeline = {.fd = lifeline_fd, .events = POLLIN};
  if (poll(&lifeline, 1, 0) > 0 && (lifeline.revents & POLLHUP)) _exit(1);
  close(lifeline_fd);

  enter_pod_namespaces();
  if (write_all(ready_fd, "OK", 2) < 0) _exit(1);
  close(ready_fd);

  /* Blocked signals are queued even for a pid-namespace init, whose default dispositions are ignored. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigprocmask(SIG_BLOCK, &set, NULL);
  for (;;) {
    int sig = sigwaitinfo(&set, NULL);
    if (sig == SIGTERM || sig == SIGINT) _exit(0);
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
  }
}

/*
 * The holder gets the new pid namespace; the init switches back to the host one, so that runc,
 * forked later by the init, runs in the host pid namespace. Only then are the orphaned container
 * processes reparented to the init: the kernel looks for a subreaper only among ancestors in the
 * orphan's parent's pid namespace, and falls back to that namespace's init (the holder) otherwise.
 */
static void start_holder(void) {
  int host_pidns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
  if (host_pidns < 0) die("open /proc/self/ns/pid: %s", strerror(errno));
  int ready[2], lifeline[2];
  if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(lifeline, O_CLOEXEC) < 0) die("pipe2: %s", strerror(errno));
  if (!opts.host_pid && unshare(CLONE_NEWPID) < 0) die("unshare(CLONE_NEWPID): %s", strerror(errno));

  pid_t pid = fork();
  if (pid < 0) die("fork holder: %s", strerror(errno));
  if (pid == 0) {
    close(ready[0]);
    close(lifeline[1]);
    close(signal_fd);
    holder_main(ready[1], lifeline[0]);
    _exit(1);
  }
  holder_pid = pid;
  if (setns(host_pidns, CLONE_NEWPID) < 0) die("setns back to host pid namespace: %s", strerror(errno));
  close(host_pidns);
  close(ready[1]);
  close(lifeline[0]);
  /* lifeline[1] stays open (and close-on-exec) for the init's whole life. */

  char answer[8] = {0};
  ssize_t n;
  do n = read(ready[0], answer, sizeof answer - 1);
  while (n < 0 && errno == EINTR);
  close(ready[0]);
  if (n != 2 || strcmp(answer, "OK") != 0) die("holder failed to set up the pod's namespaces (see its message above)");
}

/* ---------------------------------------------------------------- requests */

static int valid_req_id(const char *id) {
  size_t len = strlen(id);
  if (len == 0 || len > MAX_REQ_ID || id[0] == '.') return 0;
  for (const char *c = id; *c; c++) {
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' || *c == '.'))
      return 0;
  }
  return 1;
}

static void write_request_result(const char *id, const char *suffix, const char *content) {
  char name[MAX_REQ_ID + 16], dir[PATH_MAX], path[PATH_MAX];
  snprintf(name, sizeof name, "%s.%s", id, suffix);
  path_join(dir, sizeof dir, opts.dir, "req");
  path_join(path, sizeof path, dir, name);
  write_file_atomic(path, content);
}

/* Runs in the forked child: report why the request never started, then exit. */
static void request_failed(const char *id, const char *what, const char *detail) {
  char msg[PATH_MAX + 128];
  snprintf(msg, sizeof msg, "%s %s: %s\n", what, detail, strerror(errno));
  write_request_result(id, "err", msg);
  _exit(127);
}

static int open_stdio(const char *id, const char *path, int flags) {
  if (strcmp(path, "-") == 0) path = "/dev/null";
  int fd = open(path, flags, 0600);
  if (fd < 0) request_failed(id, "open", path);
  return fd;
}

static void exec_request(const char *id, char **fields, int nfields) {
  sigset_t empty;
  sigemptyset(&empty);
  sigprocmask(SIG_SETMASK, &empty, NULL);
  signal(SIGPIPE, SIG_DFL);
  /* Its own session: a terminal or process-group signal aimed at the init must not reach runc. */
  setsid();

  /* Opening a FIFO blocks until its other end is opened; that is fine here, in the child. */
  int in = open_stdio(id, fields[1], O_RDONLY | O_CLOEXEC);
  int out = open_stdio(id, fields[2], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC);
  int err = strcmp(fields[3], fields[2]) == 0 ? out : open_stdio(id, fields[3], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC);
  /* dup2 clears close-on-exec on the targets; 0-2 are always open, so the opened fds are all > 2. */
  if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) request_failed(id, "dup2", "stdio");
  /* The daemon's umask is 077 (its state is private); mount points runc makes in a rootfs keep the usual modes. */
  umask(022);

  char *argv[MAX_FIELDS + 1];
  int argc = 0;
  for (int i = 4; i < nfields; i++) argv[argc++] = fields[i];
  argv[argc] = NULL;
  execvp(argv[0], argv);
  request_failed(id, "exec", argv[0]);
}

static void track_request(pid_t pid, const char *id) {
  struct request *r = calloc(1, sizeof *r);
  if (!r) die("out of memory");
  r->pid = pid;
  snprintf(r->id, sizeof r->id, "%s", id);
  r->next = running_requests;
  running_requests = r;
}

static int take_request(pid_t pid, char *id_out) {
  for (struct request **link = &running_requests; *link; link = &(*link)->next) {
    struct request *r = *link;
    if (r->pid != pid) continue;
    snprintf(id_out, MAX_REQ_ID + 1, "%s", r->id);
    *link = r->next;
    free(r);
    return 1;
  }
  return 0;
}

static void handle_request_line(char *line) {
  char *fields[MAX_FIELDS + 5];
  int nfields = 0;
  for (char *save = NULL, *tok = strtok_r(line, "\t", &save); tok && nfields < MAX_FIELDS + 4; tok = strtok_r(NULL, "\t", &save))
    fields[nfields++] = tok;
  if (nfields == 0 || !valid_req_id(fields[0])) {
    logf_("ignoring a request without a valid id");
    return;
  }
  if (nfields < 5) {
    write_request_result(fields[0], "err", "malformed request: fewer than 5 tab-separated fields\n");
    write_request_result(fields[0], "exit", "125\n");
    return;
  }
  pid_t pid = fork();
  if (pid < 0) {
    logf_("fork for request %s: %s", fields[0], strerror(errno));
    write_request_result(fields[0], "err", "fork failed\n");
    write_request_result(fields[0], "exit", "125\n");
    return;
  }
  if (pid == 0) exec_request(fields[0], fields, nfields);
  track_request(pid, fields[0]);
}

/* Lines are < PIPE_BUF and so arrive whole, but several may arrive in one read. */
static void read_requests(int ctl_fd) {
  static char buf[LINE_BUF_SIZE];
  static size_t used;
  for (;;) {
    ssize_t n = read(ctl_fd, buf + used, sizeof buf - 1 - used);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    used += (size_t)n;
    char *start = buf, *nl;
    while ((nl = memchr(start, '\n', used - (size_t)(start - buf))) != NULL) {
      *nl = '\0';
      handle_request_line(start);
      start = nl + 1;
    }
    used -= (size_t)(start - buf);
    memmove(buf, start, used);
    if (used == sizeof buf - 1) {
      logf_("dropping an over-long request line");
      used = 0;
    }
  }
}

/* ---------------------------------------------------------------- reaping */

static void record_exit(pid_t pid, int wstatus) {
  char id[MAX_REQ_ID + 1], content[64];
  int status = status_code(wstatus);
  if (take_request(pid, id)) {
    snprintf(content, sizeof content, "%d\n", status);
    write_request_result(id, "exit", content);
    return;
  }
  char dir[PATH_MAX], path[PATH_MAX], name[32];
  snprintf(name, sizeof name, "%d", (int)pid);
  path_join(dir, sizeof dir, opts.dir, "exits");
  path_join(path, sizeof path, dir, name);
  snprintf(content, sizeof content, "%d\n%lld\n", status, now_unix_ms());
  write_file_atomic(path, content);
}

/* Returns 1 when the holder was among the reaped. */
static int reap_children(void) {
  int holder_gone = 0, wstatus;
  pid_t pid;
  while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0) {
    record_exit(pid, wstatus);
    if (pid == holder_pid) holder_gone = 1;
  }
  return holder_gone;
}

/* Orphans reparented to us have no record anywhere else: find them through /proc. */
static int kill_remaining_children(void) {
  DIR *proc = opendir("/proc");
  if (!proc) return 0;
  int found = 0;
  pid_t self = getpid();
  struct dirent *entry;
  while ((entry = readdir(proc)) != NULL) {
    char path[64], stat[512];
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    pid_t pid = (pid_t)atoi(entry->d_name);
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t n = read(fd, stat, sizeof stat - 1);
    close(fd);
    if (n <= 0) continue;
    stat[n] = '\0';
    /* The command name may contain spaces and parentheses; the fields after the last ')' do not. */
    char *tail = strrchr(stat, ')');
    int ppid;
    char state;
    if (tail && sscanf(tail + 1, " %c %d", &state, &ppid) == 2 && ppid == self) {
      kill(pid, SIGKILL);
      found = 1;
    }
  }
  closedir(proc);
  return found;
}

/* Killing the holder makes the kernel kill every process of the pod's pid namespace. */
static void shutdown_pod(int exit_code) {
  if (holder_pid > 0) kill(holder_pid, SIGKILL);
  for (struct request *r = running_requests; r; r = r->next) kill(r->pid, SIGKILL);
  for (;;) {
    kill_remaining_children();
    reap_children();
    siginfo_t info;
    /* WNOWAIT only asks whether any child is left; the reaping (and recording) is done above. */
    if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD) break;
    usleep(20 * 1000);
  }
  exit(exit_code);
}

/* ---------------------------------------------------------------- main */

static void parse_args(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char **slot = NULL;
    if (strcmp(argv[i], "--dir") == 0) slot = &opts.dir;
    else if (strcmp(argv[i], "--hostname") == 0) slot = &opts.hostname;
    else if (strcmp(argv[i], "--netns") == 0) slot = &opts.netns;
    else if (strcmp(argv[i], "--host-network") == 0) { opts.host_network = 1; continue; }
    else if (strcmp(argv[i], "--host-ipc") == 0) { opts.host_ipc = 1; continue; }
    else if (strcmp(argv[i], "--host-pid") == 0) { opts.host_pid = 1; continue; }
    else if (strcmp(argv[i], "--sysctl") == 0 && opts.sysctl_count < MAX_SYSCTLS) slot = &opts.sysctls[opts.sysctl_count++];
    if (!slot || i + 1 >= argc)
      die("usage: kts-sandbox-init --dir <sandboxDir> --hostname <name> [--netns <path>] [--host-network] [--host-ipc] [--host-pid] [--sysctl <name>=<value>]... (at most %d)", MAX_SYSCTLS);
    *slot = argv[++i];
  }
  if (!opts.dir || !opts.hostname) die("--dir and --hostname are required");
  if (opts.dir[0] != '/') die("--dir must be absolute");
}

static void make_dir(const char *name) {
  char path[PATH_MAX];
  path_join(path, sizeof path, opts.dir, name);
  if (mkdir(path, 0700) < 0 && errno != EEXIST) die("mkdir %s: %s", path, strerror(errno));
}

/* Opened read-write, the FIFO always has a writer, so reads never see EOF between clients. */
static int open_ctl(void) {
  char path[PATH_MAX];
  path_join(path, sizeof path, opts.dir, "ctl");
  unlink(path);
  if (mkfifo(path, 0600) < 0) die("mkfifo %s: %s", path, strerror(errno));
  int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) die("open %s: %s", path, strerror(errno));
  return fd;
}

static int open_signalfd(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &set, NULL) < 0) die("sigprocmask: %s", strerror(errno));
  int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) die("signalfd: %s", strerror(errno));
  return fd;
}

static void serve(int ctl_fd, int sig_fd) {
  struct pollfd fds[2] = {{.fd = sig_fd, .events = POLLIN}, {.fd = ctl_fd, .events = POLLIN}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll: %s", strerror(errno));
    }
    if (fds[0].revents & POLLIN) {
      struct signalfd_siginfo info;
      while (read(sig_fd, &info, sizeof info) == (ssize_t)sizeof info) {
        if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT) shutdown_pod(0);
        /* SIGHUP is ignored: the daemon's terminal going away is no reason to end a pod. */
      }
      if (reap_children()) {
        logf_("holder %d exited; ending the sandbox", (int)holder_pid);
        holder_pid = -1;
        shutdown_pod(1);
      }
    }
    if (fds[1].revents & POLLIN) read_requests(ctl_fd);
  }
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  setvbuf(stderr, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) die("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
  signal_fd = open_signalfd();
  make_dir("exits");
  make_dir("req");
  start_holder();
  int ctl_fd = open_ctl();

  char holder_file[PATH_MAX], content[32];
  path_join(holder_file, sizeof holder_file, opts.dir, "holder.pid");
  snprintf(content, sizeof content, "%d\n", (int)holder_pid);
  if (write_file_atomic(holder_file, content) < 0) die("cannot write holder.pid");
  logf_("sandbox ready: holder %d", (int)holder_pid);
  serve(ctl_fd, signal_fd);
  return 0;
}
