#!/bin/bash
# Usage: Tests/parity/aio-native.sh PATH/libblkfault.so   (runs in the current directory; ~40 s)
# blkfault with -i native vs blkfault with -i threads (both -t none) and vs blkdebug -i native:
# same qemu-io output (sorted: concurrent aio_write completions may reorder) and image bytes.
L=${1:?libblkfault.so}
CMDS=(-c 'write -P 1 0 2M' -c 'aio_write -P 2 4M 64k' -c 'aio_write -P 3 8M 64k' -c 'aio_write -P 4 12M 128k' -c 'aio_flush' -c 'read -P 2 4M 64k' -c 'write -z 16M 1M' -c 'discard 0 64k' -c 'readv -P 3 8M 4k 4k' -c 'writev -P 7 20M 4k 4k' -c 'write -P 9 60M 64k')
n=0; same_t=0; same_d=0
for ev in l1_update l2_load l2_update l2_alloc_write write_aio read_aio refblock_load refblock_update_part refblock_alloc refblock_alloc_hookup refblock_alloc_write cluster_alloc cluster_free flush_to_os flush_to_disk pwritev pwritev_zero pwritev_done none; do
for e in 5 28; do for once in on off; do
printf '[inject-error]\nevent = "%s"\nerrno = "%s"\nonce = "%s"\n' $ev $e $once > r.cfg
for f in n t d; do rm -f $f.qcow2; qemu-img create -q -f qcow2 $f.qcow2 64M; done
env LD_PRELOAD=$L BLKFAULT_CONFIG=$PWD/r.cfg BLKFAULT_IMAGE=$PWD/n.qcow2 timeout 60 qemu-io -f qcow2 -i native -t none "${CMDS[@]}" n.qcow2 2>&1 | grep -v "ops;" | sed "s|$PWD/||" | sort > n.out
env LD_PRELOAD=$L BLKFAULT_CONFIG=$PWD/r.cfg BLKFAULT_IMAGE=$PWD/t.qcow2 timeout 60 qemu-io -f qcow2 -i threads -t none "${CMDS[@]}" t.qcow2 2>&1 | grep -v "ops;" | sed "s|$PWD/||" | sort > t.out
timeout 60 qemu-io -f qcow2 -i native -t none "${CMDS[@]}" "blkdebug:$PWD/r.cfg:$PWD/d.qcow2" 2>&1 | grep -v "ops;" | sed "s|$PWD/||g; s|blkdebug:r.cfg:||" | sort > d.out
sed -i 's/n\.qcow2/IMG/g' n.out; sed -i 's/t\.qcow2/IMG/g' t.out; sed -i 's/d\.qcow2/IMG/g' d.out
n=$((n+1))
if cmp -s n.out t.out && cmp -s n.qcow2 t.qcow2; then same_t=$((same_t+1)); else echo "native!=threads: $ev e$e once=$once"; fi
if cmp -s n.out d.out && cmp -s n.qcow2 d.qcow2; then same_d=$((same_d+1)); else echo "native!=blkdebug: $ev e$e once=$once"; fi
done; done; done
echo "cases $n: blkfault -i native == blkfault -i threads: $same_t; == blkdebug -i native: $same_d"
