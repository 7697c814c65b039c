#!/bin/sh
# Makes a freshly bootstrapped Debian 12 or 13 root ($1) into the base of the e2e test
# guest, variant $2 ("waprov": with the .deb's dependencies $3 (its Depends field)
# installed from Debian, so that guest-waprov.sh can install the .deb itself without the
# network and swap it in with `waprov -enable` at every run; "cloudinit":
# Debian's cloud-init with the Azure datasource; "waprov-nm": as "waprov", but its NIC
# is NetworkManager's and sshd is socket-activated: Debian's ssh.socket is enabled
# instead of ssh.service; no guest agent, as Debian's waagent conflicts with
# network-manager; "trixie": "waprov" on Debian 13). Run by mmdebstrap as a customize hook,
# with the network (apt) and $1's /proc, /sys, /dev mounted. Only what qemu lacks
# compared with an Azure VM is faked here, and each fake says what it stands in for.
set -eu
root=$1 variant=$2
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

# --- the image as an image builder would make it -------------------------------------
printf 'LABEL=root / ext4 defaults,errors=remount-ro 0 1\n' >"$root/etc/fstab"
printf 'debian\n' >"$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
if [ "$variant" = waprov-nm ]; then
    # NetworkManager (Debian's network-manager, its internal DHCP client) manages the NIC
    # by a keyfile profile; DNS is left alone (see the end), the wireserver's host route
    # is in the profile as Azure's DHCP would give it (below).
    mkdir -p "$root/etc/NetworkManager/system-connections" "$root/etc/NetworkManager/conf.d"
    printf '[main]\ndns=none\n' >"$root/etc/NetworkManager/conf.d/90-e2e.conf"
    cat >"$root/etc/NetworkManager/system-connections/e2e.nmconnection" <<'NET'
[connection]
id=e2e
type=ethernet
autoconnect=true

[ipv4]
method=auto
ignore-auto-dns=true
route1=168.63.129.16/32

[ipv6]
method=ignore
NET
    chmod 0600 "$root/etc/NetworkManager/system-connections/e2e.nmconnection"
    in_root systemctl enable NetworkManager.service
    # sshd socket-activated: Debian 12's ssh.socket (Accept=no: it starts ssh.service).
    in_root systemctl disable ssh.service
    in_root systemctl enable ssh.socket
    # With e2e.sshd=per-connection on the kernel command line, the socket starts one sshd
    # per connection (Accept=yes, ssh@.service), as Debian 11's openssh-server shipped
    # it and as Flatcar's and Fedora's sshd.socket do (sshd@.service): a generator adds
    # both for that boot only. RuntimeDirectoryPreserve=yes: without it, one instance's
    # end removes /run/sshd under the next one ("Missing privilege separation directory",
    # seen here with back-to-back logins).
    mkdir -p "$root/etc/systemd/system-generators"
    cat >"$root/etc/systemd/system-generators/e2e-sshd-per-connection" <<'GEN'
#!/bin/sh
grep -qw 'e2e.sshd=per-connection' /proc/cmdline || exit 0
mkdir -p "$1/ssh.socket.d"
printf '[Socket]\nAccept=yes\n' >"$1/ssh.socket.d/e2e-per-connection.conf"
cat >"$1/ssh@.service" <<'UNIT'
[Unit]
Description=OpenBSD Secure Shell server per-connection daemon (Debian 11's unit)
Documentation=man:sshd(8) man:sshd_config(5)
After=auditd.service

[Service]
EnvironmentFile=-/etc/default/ssh
ExecStart=-/usr/sbin/sshd -i $SSHD_OPTS
StandardInput=socket
RuntimeDirectory=sshd
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
UNIT
GEN
    chmod 0755 "$root/etc/systemd/system-generators/e2e-sshd-per-connection"
else
mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/80-e2e-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4

[DHCPv4]
UseDNS=false
UseHostname=false

# Azure's DHCP gives the VM a host route to the wireserver (the guest agent looks for it
# in /proc/net/route to find the endpoint); qemu's cannot, so the image has it.
[Route]
Destination=168.63.129.16/32
Scope=link
NET
in_root systemctl enable systemd-networkd.service
fi
printf 'UseDNS no\n' >"$root/etc/ssh/sshd_config.d/10-e2e-nodns.conf"

# --- what qemu lacks -----------------------------------------------------------------
# Azure's udev rules name the resource disk by its vmbus id, which qemu has not; the
# test disk carries the SCSI serial "resource-disk" and gets the same link here.
cat >"$root/etc/udev/rules.d/66-e2e-resource-disk.rules" <<'UDEV'
ACTION!="add|change", GOTO="e2e_end"
SUBSYSTEM!="block", GOTO="e2e_end"
ENV{ID_SCSI_SERIAL}!="resource-disk", GOTO="e2e_end"
ENV{DEVTYPE}=="disk", SYMLINK+="disk/azure/resource"
ENV{DEVTYPE}=="partition", SYMLINK+="disk/azure/resource-part%n"
LABEL="e2e_end"
UDEV

# Debian's walinuxagent.service runs only on Hyper-V (ConditionVirtualization=microsoft).
mkdir -p "$root/etc/systemd/system/walinuxagent.service.d"
cat >"$root/etc/systemd/system/walinuxagent.service.d/10-e2e-qemu.conf" <<'UNIT'
# e2e test image: qemu is not Hyper-V. The guest agent finds the resource disk by
# walking /sys/bus/vmbus, which qemu has not: it sees a Gen1 vmbus view of the same
# disk (made by e2e-vmbus-view.service), in its own mount namespace only.
[Unit]
ConditionVirtualization=
Requires=e2e-vmbus-view.service
After=e2e-vmbus-view.service

[Service]
BindReadOnlyPaths=/run/e2e-sysbus:/sys/bus
UNIT
cat >"$root/etc/systemd/system/e2e-vmbus-view.service" <<'UNIT'
[Unit]
Description=e2e test image: a Gen1 vmbus view of the resource disk for the guest agent
Requires=dev-disk-azure-resource.device
After=dev-disk-azure-resource.device

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'dev=$(basename "$(readlink -f /dev/disk/azure/resource)"); d=/run/e2e-sysbus/vmbus/devices/00000000-0001-8899-0000-000000000000; mkdir -p "$d/host3/target3:0:1/3:0:1:0/block/$dev"; echo "{00000000-0001-8899-0000-000000000000}" >"$d/device_id"'
UNIT

# --- the variant -----------------------------------------------------------------------
# The guest agent's configuration, as on an image that keeps a swapfile on the resource
# disk (waprov-nm has no guest agent: waprov reads its own shipped defaults there).
conf="$root/etc/waagent.conf"
if [ "$variant" != waprov-nm ]; then
    sed -i -e 's/^ResourceDisk.Format=.*/ResourceDisk.Format=y/' \
           -e 's/^ResourceDisk.EnableSwap=.*/ResourceDisk.EnableSwap=y/' \
           -e 's/^ResourceDisk.SwapSizeMB=.*/ResourceDisk.SwapSizeMB=128/' "$conf"
fi
case $variant in
waprov|waprov-nm|trixie)
    # what the .deb depends on (on trixie: python3-crypt-r), for guest-waprov.sh
    in_root apt-get satisfy -y -q --no-install-recommends "$3"
    ;;
cloudinit)
    in_root apt-get install -y -q --no-install-recommends cloud-init isc-dhcp-client
    printf 'datasource_list: [ Azure ]\n' >"$root/etc/cloud/cloud.cfg.d/90-e2e-azure.cfg"
    ;;
*) echo "guest-setup: unknown variant $variant" >&2; exit 2 ;;
esac
# No DNS in qemu's restricted network: names resolve from files and systemd's own
# module (the host's name), so sudo and sshd never wait for a resolver.
: >"$root/etc/resolv.conf"
sed -i 's/^hosts:.*/hosts:          files myhostname/' "$root/etc/nsswitch.conf"
