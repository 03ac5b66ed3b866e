;; cat: writes each file named by argv[1..] to stdout, or stdin to stdout when it has no arguments. A path is looked up in the first preopened
;; directory (fd 3), as WASI resolves it: a path that leaves it is refused (wasmtime says EPERM, other
;; runtimes ENOTCAPABLE). On an error it prints the path and the WASI errno on stderr and exits 1.
;; Memory: 0-15 scratch, 16-255 text, 512-543 digits, 1024-2047 argv pointers, 4096-32767 argv
;; strings, 32768-65535 read buffer.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "cat: ")
  (data (i32.const 24) ": WASI errno ")
  (data (i32.const 40) " (ENOTCAPABLE: outside the preopened directories)")
  (data (i32.const 96) " (ENOENT: no such file)")
  (data (i32.const 128) "\n")
  (data (i32.const 136) "cat: too many arguments\n")
  (data (i32.const 160) " (EPERM: outside the preopened directories)")

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

  ;; Copies one file to stdout; returns 0 or the WASI errno of the open or read that failed.
  (func $cat_file (param $path i32) (result i32) (local $errno i32) (local $fd i32)
    ;; dirfd 3, follow symlinks, no oflags, rights: fd_read only.
    (local.set $errno (call $path_open (i32.const 3) (i32.const 1) (local.get $path) (call $strlen (local.get $path))
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12)))
    (if (local.get $errno) (then (return (local.get $errno))))
    (local.set $fd (i32.load (i32.const 12)))
    (local.set $errno (call $copy (local.get $fd)))
    (drop (call $fd_close (local.get $fd)))
    (local.get $errno))

  ;; Copies fd to stdout until end of file; returns 0 or the WASI errno of the read that failed.
  (func $copy (param $fd i32) (result i32) (local $errno i32)
    (block $end
      (loop $more
        (i32.store (i32.const 0) (i32.const 32768))
        (i32.store (i32.const 4) (i32.const 32768))
        (local.set $errno (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br_if $end (local.get $errno))
        (br_if $end (i32.eqz (i32.load (i32.const 8))))
        (call $write (i32.const 1) (i32.const 32768) (i32.load (i32.const 8)))
        (br $more)))
    (local.get $errno))

  (func $fail (param $path i32) (param $errno i32)
    (call $write (i32.const 2) (i32.const 16) (i32.const 5))
    (call $write (i32.const 2) (local.get $path) (call $strlen (local.get $path)))
    (call $write (i32.const 2) (i32.const 24) (i32.const 13))
    (call $write_decimal (i32.const 2) (local.get $errno))
    (if (i32.eq (local.get $errno) (i32.const 76)) (then (call $write (i32.const 2) (i32.const 40) (i32.const 49))))
    (if (i32.eq (local.get $errno) (i32.const 63)) (then (call $write (i32.const 2) (i32.const 160) (i32.const 43))))
    (if (i32.eq (local.get $errno) (i32.const 44)) (then (call $write (i32.const 2) (i32.const 96) (i32.const 23))))
    (call $write (i32.const 2) (i32.const 128) (i32.const 1))
    (call $proc_exit (i32.const 1)))

  (func (export "_start") (local $argc i32) (local $i i32) (local $path i32) (local $errno i32)
    (drop (call $args_sizes_get (i32.const 12) (i32.const 8)))
    (local.set $argc (i32.load (i32.const 12)))
    (if (i32.or (i32.gt_u (local.get $argc) (i32.const 256)) (i32.gt_u (i32.load (i32.const 8)) (i32.const 28672)))
      (then
        (call $write (i32.const 2) (i32.const 136) (i32.const 24))
        (call $proc_exit (i32.const 2))))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (if (i32.eq (local.get $argc) (i32.const 1))
      (then (call $proc_exit (if (result i32) (call $copy (i32.const 0)) (then (i32.const 1)) (else (i32.const 0))))))
    (local.set $i (i32.const 1))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $argc)))
        (local.set $path (i32.load (i32.add (i32.const 1024) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $errno (call $cat_file (local.get $path)))
        (if (local.get $errno) (then (call $fail (local.get $path) (local.get $errno))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $proc_exit (i32.const 0))))
