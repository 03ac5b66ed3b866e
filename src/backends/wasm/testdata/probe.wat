;; probe: runs file operations named by its arguments, in order, against the first preopened
;; directory (fd 3), and prints how each went; the escape tests drive it like a hostile module would.
;;   symlink TARGET LINK   path_symlink(TARGET, fd 3, LINK)
;;   write PATH TEXT       path_open(fd 3, PATH, O_CREAT|O_TRUNC, following symlinks) + fd_write(TEXT)
;;   read PATH             path_open(fd 3, PATH, following symlinks) + fd_read, copied to stdout
;; Each prints "<op> <path>: ok" or "<op> <path>: errno <n>" (a read's content follows its ok line);
;; it exits 0 after the last, or 2 on bad arguments.
;; Memory: 0-15 scratch, 16-255 text, 512-543 digits, 1024-2047 argv pointers, 4096-32767 argv
;; strings, 32768-65535 read buffer.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink" (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) ": ok\n")
  (data (i32.const 24) ": errno ")
  (data (i32.const 40) "\n")
  (data (i32.const 48) "symlink")
  (data (i32.const 56) "write")
  (data (i32.const 64) "read")
  (data (i32.const 72) " ")
  (data (i32.const 80) "probe: bad arguments\n")

  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func $strlen (param $ptr i32) (result i32) (local $end i32)
    (local.set $end (local.get $ptr))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (local.get $end))))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))
        (br $next)))
    (i32.sub (local.get $end) (local.get $ptr)))

  (func $write_decimal (param $fd i32) (param $value i32) (local $p i32)
    (local.set $p (i32.const 544))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $value) (i32.const 10))))
      (local.set $value (i32.div_u (local.get $value) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $value) (i32.const 0))))
    (call $write (local.get $fd) (local.get $p) (i32.sub (i32.const 544) (local.get $p))))

  ;; 1 if the NUL-terminated string at $a is the $len bytes at $b.
  (func $is (param $a i32) (param $b i32) (param $len i32) (result i32) (local $i i32)
    (if (i32.ne (call $strlen (local.get $a)) (local.get $len)) (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i))) (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  (func $arg (param $i i32) (result i32)
    (i32.load (i32.add (i32.const 1024) (i32.shl (local.get $i) (i32.const 2)))))

  (func $say (param $op i32) (param $op_len i32) (param $path i32) (param $errno i32)
    (call $write (i32.const 1) (local.get $op) (local.get $op_len))
    (call $write (i32.const 1) (i32.const 72) (i32.const 1))
    (call $write (i32.const 1) (local.get $path) (call $strlen (local.get $path)))
    (if (i32.eqz (local.get $errno))
      (then (call $write (i32.const 1) (i32.const 16) (i32.const 5)))
      (else
        (call $write (i32.const 1) (i32.const 24) (i32.const 8))
        (call $write_decimal (i32.const 1) (local.get $errno))
        (call $write (i32.const 1) (i32.const 40) (i32.const 1)))))

  ;; path_open beneath fd 3, following symlinks; the new fd is at 12.
  (func $open (param $path i32) (param $oflags i32) (param $rights i64) (result i32)
    (call $path_open (i32.const 3) (i32.const 1) (local.get $path) (call $strlen (local.get $path))
      (local.get $oflags) (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 12)))

  (func $symlink (param $target i32) (param $link i32)
    (call $say (i32.const 48) (i32.const 7) (local.get $link)
      (call $path_symlink (local.get $target) (call $strlen (local.get $target)) (i32.const 3) (local.get $link) (call $strlen (local.get $link)))))

  (func $write_file (param $path i32) (param $text i32) (local $errno i32) (local $fd i32)
    ;; O_CREAT|O_TRUNC, rights: fd_write.
    (local.set $errno (call $open (local.get $path) (i32.const 9) (i64.const 64)))
    (if (i32.eqz (local.get $errno))
      (then
        (local.set $fd (i32.load (i32.const 12)))
        (call $write (local.get $fd) (local.get $text) (call $strlen (local.get $text)))
        (drop (call $fd_close (local.get $fd)))))
    (call $say (i32.const 56) (i32.const 5) (local.get $path) (local.get $errno)))

  (func $read_file (param $path i32) (local $errno i32) (local $fd i32)
    ;; no oflags, rights: fd_read.
    (local.set $errno (call $open (local.get $path) (i32.const 0) (i64.const 2)))
    (call $say (i32.const 64) (i32.const 4) (local.get $path) (local.get $errno))
    (if (local.get $errno) (then (return)))
    (local.set $fd (i32.load (i32.const 12)))
    (block $end
      (loop $more
        (i32.store (i32.const 0) (i32.const 32768))
        (i32.store (i32.const 4) (i32.const 32768))
        (br_if $end (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br_if $end (i32.eqz (i32.load (i32.const 8))))
        (call $write (i32.const 1) (i32.const 32768) (i32.load (i32.const 8)))
        (br $more)))
    (call $write (i32.const 1) (i32.const 40) (i32.const 1))
    (drop (call $fd_close (local.get $fd))))

  (func $bad_arguments
    (call $write (i32.const 2) (i32.const 80) (i32.const 21))
    (call $proc_exit (i32.const 2)))

  (func (export "_start") (local $argc i32) (local $i i32) (local $op i32)
    (drop (call $args_sizes_get (i32.const 12) (i32.const 8)))
    (local.set $argc (i32.load (i32.const 12)))
    (if (i32.or (i32.gt_u (local.get $argc) (i32.const 256)) (i32.gt_u (i32.load (i32.const 8)) (i32.const 28672)))
      (then (call $bad_arguments)))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (local.set $i (i32.const 1))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $argc)))
        (local.set $op (call $arg (local.get $i)))
        (if (call $is (local.get $op) (i32.const 48) (i32.const 7))
          (then
            (if (i32.ge_u (i32.add (local.get $i) (i32.const 2)) (local.get $argc)) (then (call $bad_arguments)))
            (call $symlink (call $arg (i32.add (local.get $i) (i32.const 1))) (call $arg (i32.add (local.get $i) (i32.const 2))))
            (local.set $i (i32.add (local.get $i) (i32.const 3)))
            (br $next)))
        (if (call $is (local.get $op) (i32.const 56) (i32.const 5))
          (then
            (if (i32.ge_u (i32.add (local.get $i) (i32.const 2)) (local.get $argc)) (then (call $bad_arguments)))
            (call $write_file (call $arg (i32.add (local.get $i) (i32.const 1))) (call $arg (i32.add (local.get $i) (i32.const 2))))
            (local.set $i (i32.add (local.get $i) (i32.const 3)))
            (br $next)))
        (if (call $is (local.get $op) (i32.const 64) (i32.const 4))
          (then
            (if (i32.ge_u (i32.add (local.get $i) (i32.const 1)) (local.get $argc)) (then (call $bad_arguments)))
            (call $read_file (call $arg (i32.add (local.get $i) (i32.const 1))))
            (local.set $i (i32.add (local.get $i) (i32.const 2)))
            (br $next)))
        (call $bad_arguments)))
    (call $proc_exit (i32.const 0))))
