/* Stands in for critest's nonewprivs image: installed setuid root, it prints the effective uid it got,
 * so a container run as uid 1000 prints 0 unless no_new_privs stopped the setuid bit. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
  printf("Effective uid: %d\n", (int)geteuid());
  return 0;
}
