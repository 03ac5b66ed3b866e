// kts-beneath ROOT: runs file and mount operations strictly beneath the directory ROOT, which a hostile
// party (a VM guest, through its 9p share) may write. Every path is resolved by the kernel with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), and mounts are made and removed
// through the resulting fds, so a symlink, a "..", an absolute path or a rename race fails the operation
// instead of redirecting it. Nothing is ever opened blocking: a FIFO is refused, never waited on.
//
// Operations come on stdin, each a list of NUL-terminated fields; the first error stops the run
// (exit 1, one line on stderr naming the operation and the path):
//   mkdir REL              make REL and its missing parents (existing ones must be real directories)
//   file REL               create REL as an empty regular file, or truncate the regular file there
//   write REL LEN <bytes>  like file, then write exactly LEN bytes
//   bind SRC REL ATTRS     bind the host path SRC (trusted: followed normally) onto the existing REL;
//                          ATTRS "rw" or "ro"; always nosuid,nodev, read-only before it becomes visible
//   pin REL                bind the directory REL onto itself (nosuid,nodev): it cannot be renamed while
//                          mounted, and one detach removes everything mounted beneath it
//   detach REL             lazily unmount the mount whose root is REL, with all beneath it; none there, or a
//                          path that leads nowhere beneath ROOT (a symlink in it), is fine
//   rmtree REL             remove REL and all in it, never following a symlink nor entering a mount; a missing
//                          REL or parent is fine (a symlink at REL itself is removed, its target untouched)
//   punch REL LEN          free the disk blocks of the regular file REL below byte LEN (its size stays)
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_FIELD 8192
#define MAX_WRITE (16 * 1024 * 1024)
#define MAX_DEPTH 64
#define BENEATH (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

static int root_fd = -1;
static const char *current_op = "start";
static const char *current_path = "";

static void fail(const char *why, int err) {
  fprintf(stderr, "kts-beneath: %s %s: %s: %s\n", current_op, current_path, why, strerror(err));
  exit(1);
}

static int openat2_beneath(int dir, const char *rel, uint64_t flags, uint64_t mode, uint64_t resolve) {
  struct open_how how = { .flags = flags | O_CLOEXEC, .mode = mode, .resolve = resolve };
  return (int)syscall(SYS_openat2, dir, rel, &how, sizeof how);
}

/** One NUL-terminated field from stdin; 0 at a clean end of input before any byte. */
static int read_field(char *buf) {
  size_t n = 0;
  for (;;) {
    int c = getchar();
    if (c == EOF) {
      if (n == 0) return 0;
      fail("truncated input", EINVAL);
    }
    if (c == '\0') break;
    if (n + 1 >= MAX_FIELD) fail("field too long", ENAMETOOLONG);
    buf[n++] = (char)c;
  }
  buf[n] = '\0';
  return 1;
}

static void need_field(char *buf) {
  if (!read_field(buf)) fail("missing field", EINVAL);
}

static long long parse_size(const char *text) {
  char *end;
  errno = 0;
  long long value = strtoll(text, &end, 10);
  if (errno || *end || end == text || value < 0) fail("bad length", EINVAL);
  return value;
}

/** Relative paths only: openat2 would refuse the rest too, this gives the clearer message. */
static void check_rel(const char *rel) {
  if (rel[0] == '\0' || rel[0] == '/') fail("path must be relative and non-empty", EINVAL);
}

static void op_mkdir(const char *rel) {
  char path[MAX_FIELD];
  snprintf(path, sizeof path, "%s", rel);
  // One component at a time from a directory fd proven beneath ROOT: mkdirat never follows the
  // component it creates, and the open that follows refuses it unless it is a real directory.
  int dir = openat2_beneath(root_fd, ".", O_PATH | O_DIRECTORY, 0, BENEATH);
  if (dir < 0) fail("open root", errno);
  for (char *save = NULL, *name = strtok_r(path, "/", &save); name; name = strtok_r(NULL, "/", &save)) {
    if (mkdirat(dir, name, 0755) < 0 && errno != EEXIST) fail("mkdir", errno);
    int next = openat2_beneath(dir, name, O_PATH | O_DIRECTORY, 0, BENEATH);
    if (next < 0) fail("not a directory beneath the root", errno);
    close(dir);
    dir = next;
  }
  close(dir);
}

/** The parent directory of REL, opened beneath ROOT; *name points at REL's last component. */
static int open_parent(const char *rel, char *copy, const char **name) {
  snprintf(copy, MAX_FIELD, "%s", rel);
  char *slash = strrchr(copy, '/');
  if (!slash) {
    *name = copy;
    return openat2_beneath(root_fd, ".", O_PATH | O_DIRECTORY, 0, BENEATH);
  }
  *slash = '\0';
  *name = slash + 1;
  return openat2_beneath(root_fd, copy, O_PATH | O_DIRECTORY, 0, BENEATH);
}

/** Opens REL for writing as a regular file, creating it; never blocks and refuses anything but a regular file. */
static int open_regular(const char *rel, int create) {
  int fd = openat2_beneath(root_fd, rel, O_WRONLY | O_NONBLOCK | O_NOFOLLOW | (create ? O_CREAT : 0), create ? 0644 : 0, BENEATH);
  if (fd < 0) fail("open", errno);
  struct stat st;
  if (fstat(fd, &st) < 0) fail("fstat", errno);
  if (!S_ISREG(st.st_mode)) fail("not a regular file", EINVAL);
  return fd;
}

static void op_write(const char *rel, long long len) {
  if (len > MAX_WRITE) fail("content too large", EFBIG);
  int fd = open_regular(rel, 1);
  if (ftruncate(fd, 0) < 0) fail("truncate", errno);
  char buf[65536];
  while (len > 0) {
    size_t chunk = len > (long long)sizeof buf ? sizeof buf : (size_t)len;
    if (fread(buf, 1, chunk, stdin) != chunk) fail("truncated content", EINVAL);
    for (size_t done = 0; done < chunk;) {
      ssize_t n = write(fd, buf + done, chunk - done);
      if (n < 0) fail("write", errno);
      done += (size_t)n;
    }
    len -= (long long)chunk;
  }
  close(fd);
}

static long sys_open_tree(int dfd, const char *path, unsigned flags) { return syscall(SYS_open_tree, dfd, path, flags); }
static long sys_mount_setattr(int dfd, const char *path, unsigned flags, struct mount_attr *attr) {
  return syscall(SYS_mount_setattr, dfd, path, flags, attr, sizeof *attr);
}
static long sys_move_mount(int from, const char *from_path, int to, const char *to_path, unsigned flags) {
  return syscall(SYS_move_mount, from, from_path, to, to_path, flags);
}

/** Clones the mount at source_fd, sets its attributes while still detached, then attaches it onto REL. */
static void attach_clone(int source_fd, const char *rel, int readonly) {
  int tree = (int)sys_open_tree(source_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
  if (tree < 0) fail("open_tree", errno);
  struct mount_attr attr = { .attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (readonly ? MOUNT_ATTR_RDONLY : 0) };
  if (sys_mount_setattr(tree, "", AT_EMPTY_PATH, &attr) < 0) fail("mount_setattr", errno);
  int target = openat2_beneath(root_fd, rel, O_PATH | O_NOFOLLOW, 0, BENEATH);
  if (target < 0) fail("open target", errno);
  if (sys_move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0) fail("move_mount", errno);
  close(target);
  close(tree);
}

static void op_bind(const char *source, const char *rel, const char *attrs) {
  int readonly = strcmp(attrs, "ro") == 0;
  if (!readonly && strcmp(attrs, "rw") != 0) fail("attributes must be ro or rw", EINVAL);
  int source_fd = open(source, O_PATH | O_CLOEXEC);
  if (source_fd < 0) fail(source, errno);
  attach_clone(source_fd, rel, readonly);
  close(source_fd);
}

static void op_pin(const char *rel) {
  int dir = openat2_beneath(root_fd, rel, O_PATH | O_DIRECTORY, 0, BENEATH);
  if (dir < 0) fail("open", errno);
  attach_clone(dir, rel, 0);
  close(dir);
}

/** ENOENT, or a symlink (ELOOP) or non-directory (ENOTDIR) in the way: what REL named is not reachable beneath ROOT. */
static int gone(int err) {
  return err == ENOENT || err == ELOOP || err == ENOTDIR;
}

static void op_detach(const char *rel) {
  int fd = openat2_beneath(root_fd, rel, O_PATH, 0, BENEATH);
  if (fd < 0) {
    // A path the guest replaced or moved away holds no mount of ours: nothing to detach here.
    if (gone(errno)) return;
    fail("open", errno);
  }
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  // EINVAL: REL is no mount's root, so nothing of ours is there.
  if (umount2(proc, MNT_DETACH) < 0 && errno != EINVAL) fail("umount", errno);
  close(fd);
}

/** Empties the directory dir_fd; subdirectories are opened with no symlink and no mount crossing. */
static void empty_dir(int dir_fd, int depth) {
  if (depth > MAX_DEPTH) fail("tree too deep", ELOOP);
  int list_fd = dup(dir_fd);
  if (list_fd < 0) fail("dup", errno);
  DIR *dir = fdopendir(list_fd);
  if (!dir) fail("fdopendir", errno);
  for (struct dirent *entry; (entry = readdir(dir));) {
    if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, "..")) continue;
    if (unlinkat(dir_fd, entry->d_name, 0) == 0 || errno == ENOENT) continue;
    if (errno != EISDIR) fail("unlink", errno);
    int sub = openat2_beneath(dir_fd, entry->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, BENEATH | RESOLVE_NO_XDEV);
    if (sub < 0) fail("open subdirectory", errno);
    empty_dir(sub, depth + 1);
    close(sub);
    if (unlinkat(dir_fd, entry->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT) fail("rmdir", errno);
  }
  closedir(dir);
}

static void op_rmtree(const char *rel) {
  char copy[MAX_FIELD];
  const char *name;
  int parent = open_parent(rel, copy, &name);
  if (parent < 0) {
    if (gone(errno)) return;
    fail("open parent", errno);
  }
  if (unlinkat(parent, name, 0) == 0 || errno == ENOENT) return (void)close(parent);
  if (errno != EISDIR) fail("unlink", errno);
  int dir = openat2_beneath(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, BENEATH | RESOLVE_NO_XDEV);
  if (dir < 0) fail("open", errno);
  empty_dir(dir, 0);
  close(dir);
  if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT) fail("rmdir", errno);
  close(parent);
}

static void op_punch(const char *rel, long long len) {
  int fd = open_regular(rel, 0);
  if (len > 0 && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, len) < 0) fail("punch hole", errno);
  close(fd);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: kts-beneath ROOT < operations\n");
    return 2;
  }
  root_fd = open(argv[1], O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) fail(argv[1], errno);
  static char op[MAX_FIELD], a[MAX_FIELD], b[MAX_FIELD], c[MAX_FIELD];
  while (read_field(op)) {
    current_op = op;
    need_field(a);
    current_path = a;
    if (!strcmp(op, "bind")) {
      need_field(b);
      need_field(c);
      current_path = b;
      check_rel(b);
      op_bind(a, b, c);
      continue;
    }
    check_rel(a);
    if (!strcmp(op, "mkdir")) op_mkdir(a);
    else if (!strcmp(op, "file")) op_write(a, 0);
    else if (!strcmp(op, "write")) need_field(b), op_write(a, parse_size(b));
    else if (!strcmp(op, "pin")) op_pin(a);
    else if (!strcmp(op, "detach")) op_detach(a);
    else if (!strcmp(op, "rmtree")) op_rmtree(a);
    else if (!strcmp(op, "punch")) need_field(b), op_punch(a, parse_size(b));
    else fail("unknown operation", EINVAL);
  }
  return 0;
}
