"""The resource disk and its swapfile (WA §8): `waprov -resourcedisk`, at every boot.

command.py: the command (run, main); disk.py: which block device is the resource disk
(vmbus, NVMe, RAID-0); mount.py: partition, format, mount, the DATALOSS README; swap.py:
the swapfile.
"""
