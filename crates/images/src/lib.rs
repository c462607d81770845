//! vessel's image store: base disk images that users import (`vessel image import`) or
//! build (`vessel image build`), each in `$XDG_DATA_HOME/vessel/images/NAME/` with a
//! manifest, and the copy-on-write overlays VMs boot from.
//!
//! A base image is never written after import: VMs get a qcow2 overlay backed by it
//! ([`Image::create_overlay`]). Its format is detected once, at import, and recorded in the
//! manifest; every later open uses the recorded format (a base image is not guest-writable,
//! but its recorded format is the one vessel checked).
//!
//! Vagrant boxes (`libvirt` and vessel's own) are unpacked ([`unpack_box`]) and their
//! `box.img` imported; [`pack_box`] writes a vessel box.

mod copy;
mod manifest;
mod names;
mod store;
mod vagrant_box;

pub use manifest::{BootInfo, Manifest, MANIFEST_VERSION};
pub use names::valid_name;
pub use store::{
    check_importable, create_overlay, BootFinder, Image, ImageStore, StoreError, BOOT_DIR,
};
pub use vagrant_box::{
    looks_like_box, pack_box, unpack_box, BoxError, BoxMetadata, VESSEL_PROVIDER,
};
