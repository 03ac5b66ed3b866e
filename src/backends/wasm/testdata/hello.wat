;; hello: prints a greeting, then each argument ("arg: ...") and environment variable ("env: ...")
;; on its own line to stdout, and exits with argv[1] as its exit status when argv[1] is all decimal
;; digits (else 0).
;; Memory: 0-15 scratch (iovec, counts), 16-127 text, 512-543 digits, 1024-2047 argv pointers,
;; 2048-4095 environ pointers, 4096-32767 argv strings, 32768-65535 environ strings.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\n")
  (data (i32.const 48) "arg: ")
  (data (i32.const 56) "env: ")
  (data (i32.const 64) "\n")
  (data (i32.const 72) "hello: too many arguments or variables\n")

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

  ;; Writes "<5-byte prefix><string>\n" for each of the $count strings listed at $table.
  (func $print_lines (param $prefix i32) (param $table i32) (param $count i32) (local $i i32) (local $s i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $s (i32.load (i32.add (local.get $table) (i32.shl (local.get $i) (i32.const 2)))))
        (call $write (i32.const 1) (local.get $prefix) (i32.const 5))
        (call $write (i32.const 1) (local.get $s) (call $strlen (local.get $s)))
        (call $write (i32.const 1) (i32.const 64) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))

  ;; The value of a string of decimal digits, or 0 if it holds anything else.
  (func $parse_status (param $s i32) (result i32) (local $value i32) (local $c i32)
    (block $done
      (loop $next
        (local.set $c (i32.load8_u (local.get $s)))
        (br_if $done (i32.eqz (local.get $c)))
        (if (i32.or (i32.lt_u (local.get $c) (i32.const 48)) (i32.gt_u (local.get $c) (i32.const 57)))
          (then (return (i32.const 0))))
        (local.set $value (i32.add (i32.mul (local.get $value) (i32.const 10)) (i32.sub (local.get $c) (i32.const 48))))
        (local.set $s (i32.add (local.get $s) (i32.const 1)))
        (br $next)))
    (local.get $value))

  (func $too_big
    (call $write (i32.const 2) (i32.const 72) (i32.const 39))
    (call $proc_exit (i32.const 2)))

  (func (export "_start") (local $argc i32) (local $envc i32)
    (call $write (i32.const 1) (i32.const 16) (i32.const 16))
    (drop (call $args_sizes_get (i32.const 12) (i32.const 8)))
    (local.set $argc (i32.load (i32.const 12)))
    (if (i32.or (i32.gt_u (local.get $argc) (i32.const 256)) (i32.gt_u (i32.load (i32.const 8)) (i32.const 28672)))
      (then (call $too_big)))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (call $print_lines (i32.const 48) (i32.const 1024) (local.get $argc))
    (drop (call $environ_sizes_get (i32.const 12) (i32.const 8)))
    (local.set $envc (i32.load (i32.const 12)))
    (if (i32.or (i32.gt_u (local.get $envc) (i32.const 512)) (i32.gt_u (i32.load (i32.const 8)) (i32.const 32768)))
      (then (call $too_big)))
    (drop (call $environ_get (i32.const 2048) (i32.const 32768)))
    (call $print_lines (i32.const 56) (i32.const 2048) (local.get $envc))
    (if (i32.ge_u (local.get $argc) (i32.const 2))
      (then (call $proc_exit (call $parse_status (i32.load (i32.const 1028))))))
    (call $proc_exit (i32.const 0))))
