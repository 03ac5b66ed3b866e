;; grow: grows its memory one page (64 KiB) at a time until memory.grow fails, prints how far it
;; got on stderr, then traps, as a program's allocator aborts when it runs out of memory.
;; Memory: 0-15 scratch, 16-127 text, 512-543 digits.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "grow: memory.grow failed at ")
  (data (i32.const 48) " pages\n")

  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func $write_decimal (param $fd i32) (param $value i32) (local $p i32)
    (local.set $p (i32.const 544))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $value) (i32.const 10))))
      (local.set $value (i32.div_u (local.get $value) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $value) (i32.const 0))))
    (call $write (local.get $fd) (local.get $p) (i32.sub (i32.const 544) (local.get $p))))

  (func (export "_start")
    (block $full
      (loop $more
        (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (br $more)))
    (call $write (i32.const 2) (i32.const 16) (i32.const 28))
    (call $write_decimal (i32.const 2) (memory.size))
    (call $write (i32.const 2) (i32.const 48) (i32.const 7))
    unreachable))
