//! Sizes as types: an entry's apparent size (`st_size`) and the bytes its blocks take on disk
//! (`st_blocks × 512`) are different quantities (a sparse file has more of the first, a small
//! file on a large-block filesystem more of the second), so the type says which one a count is.
//!
//! Each type holds a plain byte count: `From` and `get()` convert at the edges, sums stay in
//! the type, and with the `serde` feature each is (de)serialized as the bare number.

macro_rules! byte_count {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(
            feature = "serde",
            derive(serde::Serialize, serde::Deserialize),
            serde(transparent)
        )]
        pub struct $name(u64);

        impl $name {
            pub const ZERO: Self = Self(0);

            pub const fn new(bytes: u64) -> Self {
                Self(bytes)
            }

            /// The number of bytes.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl From<u64> for $name {
            fn from(bytes: u64) -> Self {
                Self(bytes)
            }
        }

        impl From<$name> for u64 {
            fn from(bytes: $name) -> Self {
                bytes.0
            }
        }

        impl std::ops::Add for $name {
            type Output = Self;

            fn add(self, other: Self) -> Self {
                Self(self.0 + other.0)
            }
        }

        impl std::ops::AddAssign for $name {
            fn add_assign(&mut self, other: Self) {
                self.0 += other.0;
            }
        }

        impl std::iter::Sum for $name {
            fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
                Self(iter.map(|b| b.0).sum())
            }
        }

        /// The bare number of bytes.
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

byte_count!(
    /// An entry's apparent size, `st_size`: what `du --apparent-size` counts.
    ApparentBytes
);

byte_count!(
    /// The bytes an entry's blocks take, `st_blocks × 512`: what `du` counts.
    AllocatedBytes
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_convert_add_and_print_as_numbers() {
        let total: ApparentBytes = [1u64, 2, 3].into_iter().map(ApparentBytes::from).sum();
        assert_eq!(total.get(), 6);
        let mut allocated = AllocatedBytes::new(4096);
        allocated += AllocatedBytes::from(512);
        assert_eq!(u64::from(allocated), 4608);
        assert_eq!((total + ApparentBytes::new(1)).to_string(), "7");
        assert_eq!(AllocatedBytes::default(), AllocatedBytes::ZERO);
    }
}
