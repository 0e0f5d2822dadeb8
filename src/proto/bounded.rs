//! Deserializers for sequences that refuse a count over their cap as soon
//! as the count is read, before any element is decoded or any memory
//! reserved for them (the default preallocates from the count too).

use std::fmt;
use std::marker::PhantomData;

use std::cell::RefCell;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

thread_local! {
    /// Why the last decode on this thread was refused by a cap.
    static REFUSAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The refusal of the last decode on this thread, if a cap refused it.
pub(super) fn take_refusal() -> Option<String> {
    REFUSAL.with(|r| r.borrow_mut().take())
}

fn refuse<E: de::Error>(why: String) -> E {
    let e = E::custom(&why);
    REFUSAL.with(|r| *r.borrow_mut() = Some(why));
    e
}

struct Bounded<T, const N: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Bounded<T, N> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a sequence of at most {N} elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let too_many = || refuse(format!("a sequence of more than {N} elements"));
        let hint = seq.size_hint().unwrap_or(0);
        if hint > N {
            return Err(too_many());
        }
        // Reserve for what the bytes of the frame can hold at most.
        let mut v = Vec::with_capacity(hint.min(4096));
        while let Some(x) = seq.next_element()? {
            if v.len() == N {
                return Err(too_many());
            }
            v.push(x);
        }
        Ok(v)
    }
}

/// A `Vec` of at most `N` elements.
pub fn vec<'de, D, T, const N: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_seq(Bounded::<T, N>(PhantomData))
}

struct OptBounded<T, const N: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for OptBounded<T, N> {
    type Value = Option<Vec<T>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an optional sequence of at most {N} elements")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        vec::<D, T, N>(d).map(Some)
    }
}

/// An optional `Vec` of at most `N` elements.
pub fn opt_vec<'de, D, T, const N: usize>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_option(OptBounded::<T, N>(PhantomData))
}

/// The names of a `Prune`: at most [`super::MAX_PRUNE_NAMES`], none
/// empty (no file has an empty name).
pub fn names<'de, D>(d: D) -> Result<Vec<serde_bytes::ByteBuf>, D::Error>
where
    D: Deserializer<'de>,
{
    let names: Vec<serde_bytes::ByteBuf> = vec::<D, _, { super::MAX_PRUNE_NAMES }>(d)?;
    if names.iter().any(|n| n.is_empty()) {
        return Err(refuse("an empty name in a Prune".into()));
    }
    Ok(names)
}
