#!/bin/busybox sh
# /init of the krtp test guest: load the 9p modules, mount the host's root
# read-only at /host, the project at its own path above the guest's tmpfs
# mounts, and the results folder read-write at /host/tmp/results, run /tmp/results/run.sh there as root (chroot), keep
# its output, exit code and the kernel log, and power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do
	insmod "/modules/$m" || echo "init: insmod $m failed"
done < /modules/order
mkdir -p /host
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host; then
	echo "init: cannot mount the host's root"
	poweroff -f
fi
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
mount -t tmpfs tmpfs /host/tmp
mount -t tmpfs tmpfs /host/run
mkdir -p /host/tmp/results
mount -t 9p -o trans=virtio,version=9p2000.L results /host/tmp/results
# the project itself, at its own path: it may lie under a tmpfs laid above
if [ -f /host/tmp/results/project_root ]; then
	root=$(cat /host/tmp/results/project_root)
	mkdir -p "/host$root" 2>/dev/null
	mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 project "/host$root" ||
		echo "init: cannot mount the project at $root"
fi
ip link set lo up
echo "init: running the test script"
chroot /host /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp \
	LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 KVOD_GUEST=1 \
	/bin/sh /tmp/results/run.sh > /host/tmp/results/output.log 2>&1
echo $? > /host/tmp/results/rc
dmesg > /host/tmp/results/dmesg.txt
sync
umount /host/tmp/results
poweroff -f
