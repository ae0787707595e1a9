//! Live migration of a real guest between two libvirtds in network namespaces, through
//! the libvirt driver (feature `libvirt`).
