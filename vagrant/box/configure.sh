#!/bin/bash
# Run by build.sh inside the box's root (chroot, with the host's /dev, /proc and /sys):
# Vagrant's conventions, the network, first-boot identity, pyvs's wheels, GRUB's settings.
set -euo pipefail

# user vagrant (password vagrant), Vagrant's insecure key (Vagrant swaps in a fresh key
# pair at the first `vagrant up`), sudo without a password
id vagrant >/dev/null 2>&1 || useradd -m -s /bin/bash vagrant
echo vagrant:vagrant | chpasswd
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 0600 -o vagrant -g vagrant /tmp/vagrant.pub /home/vagrant/.ssh/authorized_keys
printf 'Defaults:vagrant !requiretty\nvagrant ALL=(ALL) NOPASSWD: ALL\n' >/etc/sudoers.d/vagrant
chmod 0440 /etc/sudoers.d/vagrant

# eth0 (Vagrant's management network) by DHCP; Vagrant appends eth1.. itself (ifupdown, as
# on Debian's own Vagrant boxes)
printf 'auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n' \
  >/etc/network/interfaces
printf 'LABEL=pyvs-root / ext4 errors=remount-ro 0 1\n' >/etc/fstab
printf '127.0.0.1 localhost\n' >/etc/hosts
echo pyvs >/etc/hostname

# every VM gets its own machine-id and ssh host keys at its first boot: Ed25519 and ECDSA
# only (an RSA key takes over a minute to make under software emulation)
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*
printf '%s\n' '[Unit]' 'Description=Create the ssh host keys at the first boot' \
  'Before=ssh.service' 'ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key' '' \
  '[Service]' 'Type=oneshot' \
  "ExecStart=/usr/bin/ssh-keygen -q -N '' -t ed25519 -f /etc/ssh/ssh_host_ed25519_key" \
  "ExecStart=/usr/bin/ssh-keygen -q -N '' -t ecdsa -f /etc/ssh/ssh_host_ecdsa_key" '' \
  '[Install]' 'WantedBy=multi-user.target' >/etc/systemd/system/ssh-hostkeys.service
printf 'HostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n' \
  >/etc/ssh/sshd_config.d/hostkeys.conf
systemctl enable ssh-hostkeys.service >/dev/null 2>&1
# nothing at boot or on a timer that a lab VM does not need: each costs minutes of CPU
# under software emulation (e2scrub: LVM snapshots; apt's daily runs: downloads)
systemctl disable e2scrub_reap.service >/dev/null 2>&1 || true
for t in e2scrub_all fstrim apt-daily apt-daily-upgrade man-db; do
  systemctl disable "$t.timer" >/dev/null 2>&1 || true
done

# pyvs[live]'s wheels for Debian's python3 (netfilterqueue has no wheel: built here), so
# the director installs pyvs with no network (provision/common.sh looks here)
python3 -m venv /tmp/wv
/tmp/wv/bin/pip wheel -q --disable-pip-version-check --no-index --find-links /tmp/dl \
  -w /var/cache/pyvs/wheels netfilterqueue pyyaml prometheus-client setuptools wheel
rm -rf /tmp/wv /tmp/dl /tmp/vagrant.pub /root/.cache

# the boot loader: no menu, serial console, the kernel's interface names (eth0, eth1...)
printf '%s\n' GRUB_DEFAULT=0 GRUB_TIMEOUT=0 GRUB_DISTRIBUTOR=Debian \
  'GRUB_CMDLINE_LINUX_DEFAULT=""' \
  'GRUB_CMDLINE_LINUX="net.ifnames=0 biosdevname=0 console=tty0 console=ttyS0,115200n8"' \
  'GRUB_TERMINAL="console serial"' 'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"' \
  GRUB_DISABLE_OS_PROBER=true >/etc/default/grub
apt-get clean
