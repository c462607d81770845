//! KVM structures in the state file as arrays of exactly their size in bytes: kvm-bindings
//! pads or truncates arrays of another length, which would hide a damaged file.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub fn serialize<T: Serialize, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    value.serialize(serializer)
}

pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    let raw: Vec<u8> = Vec::deserialize(deserializer)?;
    let want = std::mem::size_of::<T>();
    if raw.len() != want {
        return Err(D::Error::custom(format!(
            "a {} of {} bytes where {want} are expected",
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("structure"),
            raw.len()
        )));
    }
    T::deserialize(serde::de::value::BytesDeserializer::<D::Error>::new(&raw))
}

#[cfg(test)]
mod tests {
    use kvm_bindings::kvm_regs;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Holder {
        #[serde(with = "super")]
        regs: kvm_regs,
    }

    #[test]
    fn exact_size_round_trips_and_other_sizes_are_refused() {
        let h = Holder {
            regs: kvm_regs {
                rip: 0x1234,
                ..Default::default()
            },
        };
        let text = serde_json::to_string(&h).unwrap();
        let back: Holder = serde_json::from_str(&text).unwrap();
        assert_eq!(back.regs.rip, 0x1234);
        assert!(serde_json::from_str::<Holder>(r#"{"regs":[1,2,3]}"#).is_err());
    }
}
