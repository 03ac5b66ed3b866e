/* Stands in for critest's nginx image, which no registry here can serve: like nginx it writes its pid to
 * /var/run/nginx.pid, names itself "nginx: master process" in /proc/<pid>/cmdline and serves HTTP on
 * port 80 (through a busybox httpd child). Static: the busybox image has no libc. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  (void)argc;
  mkdir("/var/run", 0755);
  FILE *pid_file = fopen("/var/run/nginx.pid", "w");
  if (pid_file) {
    fprintf(pid_file, "%d\n", (int)getpid());
    fclose(pid_file);
  }
  pid_t worker = fork();
  if (worker == 0) {
    execl("/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www", (char *)NULL);
    _exit(127);
  }
  /* argv[0] has room for the path this was started by (/usr/sbin/nginx plus what follows it). */
  const char title[] = "nginx: master process";
  size_t room = strlen(argv[0]);
  for (char **arg = argv + 1; *arg; arg++) room += strlen(*arg) + 1;
  memset(argv[0], 0, room);
  memcpy(argv[0], title, sizeof title - 1 < room ? sizeof title - 1 : room);
  int status;
  while (waitpid(worker, &status, 0) < 0) {
  }
  return 0;
}
