//! A session's pages, shared between the successive rows of a growing session.
//!
//! A live session grows by an event or a few at a time, and each time the view emits its
//! new row. Copying the whole sequence into each row would make every event cost the
//! session's length. A [`PageSequence`] is instead a chain of immutable segments: appending
//! pages adds a segment that points to the sequence it extends, which the earlier row
//! keeps sharing. A new segment absorbs the last ones while they are less than twice its
//! length, so each segment is at least twice as long as the next: a sequence of `n` pages
//! has at most `log2(n + 1)` segments, and a page is copied again only into a segment at
//! least 1.5 times larger, `O(log n)` times over the life of the session. Two sequences
//! that are the same object compare equal without reading a page.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

/// Pages in order; cloning shares them.
#[derive(Clone, Default)]
pub struct PageSequence {
    /// The last segment; `None` when there are no pages.
    last: Option<Arc<Segment>>,
}

struct Segment {
    /// The segments before this one.
    earlier: Option<Arc<Segment>>,
    /// The pages; a short segment (most new ones are) holds them inline, in the segment's
    /// own allocation.
    pages: SmallVec<[CompactString; 2]>,
    /// Pages in this segment and every earlier one.
    len: usize,
}

impl PageSequence {
    /// The number of pages.
    pub fn len(&self) -> usize {
        self.last.as_ref().map_or(0, |segment| segment.len)
    }

    /// Whether there are no pages.
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    /// The pages in order.
    pub fn iter(&self) -> impl Iterator<Item = &CompactString> {
        let segments: Vec<&Segment> = self.segments().collect();
        segments
            .into_iter()
            .rev()
            .flat_map(|segment| segment.pages.iter())
    }

    /// The segments, last first.
    fn segments(&self) -> impl Iterator<Item = &Segment> {
        std::iter::successors(self.last.as_deref(), |segment| segment.earlier.as_deref())
    }

    /// This sequence followed by `pages`, sharing this one's pages; a clone when `pages`
    /// is empty. Allocates the new segment and, when it is long, its pages, nothing else.
    pub fn extended<I>(&self, pages: I) -> Self
    where
        I: IntoIterator<Item = CompactString>,
        I::IntoIter: ExactSizeIterator,
    {
        let added = pages.into_iter();
        if added.len() == 0 {
            return self.clone();
        }
        // Absorbs the last segments while they are less than twice the new one's length,
        // so that each segment is at least twice as long as the next.
        let mut merged_len = added.len();
        let mut absorbed = 0;
        let mut earlier = self.last.as_ref();
        while let Some(segment) = earlier.filter(|segment| segment.pages.len() < 2 * merged_len) {
            merged_len += segment.pages.len();
            absorbed += 1;
            earlier = segment.earlier.as_ref();
        }
        let mut pages = SmallVec::with_capacity(merged_len);
        // The absorbed segments earliest first: the one `back` segments before the last.
        for back in (0..absorbed).rev() {
            if let Some(segment) = self.segments().nth(back) {
                pages.extend(segment.pages.iter().cloned());
            }
        }
        pages.extend(added);
        let len = earlier.map_or(0, |segment| segment.len) + pages.len();
        Self {
            last: Some(Arc::new(Segment {
                earlier: earlier.cloned(),
                pages,
                len,
            })),
        }
    }

    /// The first `len` pages (all of them when there are fewer), sharing every segment
    /// that holds only those: cutting a few pages off the end copies only the last
    /// segments' pages.
    pub fn truncated(&self, len: usize) -> Self {
        let mut segment = match &self.last {
            Some(last) if len < last.len => last,
            _ => return self.clone(),
        };
        // The segment that holds page `len`, the first one left out.
        while segment.len - segment.pages.len() > len {
            segment = segment
                .earlier
                .as_ref()
                .unwrap_or_else(|| unreachable!("the first segment starts at page 0"));
        }
        let kept = len - (segment.len - segment.pages.len());
        let earlier = Self {
            last: segment.earlier.clone(),
        };
        earlier.extended(segment.pages[..kept].iter().cloned())
    }

    /// Whether both are the same object (and so certainly equal).
    fn same(&self, other: &Self) -> bool {
        match (&self.last, &other.last) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl FromIterator<CompactString> for PageSequence {
    fn from_iter<I: IntoIterator<Item = CompactString>>(pages: I) -> Self {
        let pages: Vec<CompactString> = pages.into_iter().collect();
        Self::default().extended(pages)
    }
}

impl PartialEq for PageSequence {
    fn eq(&self, other: &Self) -> bool {
        self.same(other) || (self.len() == other.len() && self.iter().eq(other.iter()))
    }
}

impl Eq for PageSequence {}

/// Page by page, as a slice of pages would order.
impl Ord for PageSequence {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.same(other) {
            Ordering::Equal
        } else {
            self.iter().cmp(other.iter())
        }
    }
}

impl PartialOrd for PageSequence {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for PageSequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// As a list of pages, with its length up front (bincode, between processes, needs it).
impl Serialize for PageSequence {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut pages = serializer.serialize_seq(Some(self.len()))?;
        for page in self.iter() {
            pages.serialize_element(page)?;
        }
        pages.end()
    }
}

impl<'de> Deserialize<'de> for PageSequence {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<CompactString>::deserialize(deserializer).map(|pages| pages.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn segments(sequence: &PageSequence) -> usize {
        sequence.segments().count()
    }

    fn pages(sequence: &PageSequence) -> Vec<&str> {
        sequence.iter().map(CompactString::as_str).collect()
    }

    proptest! {
        #[test]
        fn appended_sequences_hold_their_pages_in_few_segments_and_keep_earlier_versions(
            appends in prop::collection::vec(prop::collection::vec("[a-c]", 0..4), 0..40),
        ) {
            let mut sequence = PageSequence::default();
            let mut expected: Vec<String> = Vec::new();
            let mut versions = Vec::new();
            for added in appends {
                let next = sequence.extended(added.iter().map(CompactString::from));
                versions.push((sequence, expected.len()));
                expected.extend(added);
                sequence = next;
                prop_assert_eq!(pages(&sequence), expected.iter().map(String::as_str).collect::<Vec<_>>());
                prop_assert_eq!(sequence.len(), expected.len());
                prop_assert!(segments(&sequence) <= (expected.len() + 1).ilog2() as usize);
            }
            for (version, len) in versions {
                prop_assert_eq!(pages(&version), expected[..len].iter().map(String::as_str).collect::<Vec<_>>());
            }
        }

        #[test]
        fn a_truncated_sequence_holds_the_first_pages_in_few_segments_and_leaves_the_original(
            appends in prop::collection::vec(prop::collection::vec("[a-c]", 0..6), 0..30),
            len in 0usize..80,
            added in prop::collection::vec("[a-c]", 0..4),
        ) {
            let sequence: PageSequence = appends.iter().fold(PageSequence::default(), |sequence, added| {
                sequence.extended(added.iter().map(CompactString::from))
            });
            let all: Vec<String> = appends.concat();
            let kept = len.min(all.len());
            let truncated = sequence.truncated(len);
            prop_assert_eq!(pages(&truncated), all[..kept].iter().map(String::as_str).collect::<Vec<_>>());
            prop_assert!(segments(&truncated) <= (kept + 1).ilog2() as usize);
            let grown = truncated.extended(added.iter().map(CompactString::from));
            let expected: Vec<&str> = all[..kept].iter().chain(&added).map(String::as_str).collect();
            prop_assert_eq!(pages(&grown), expected);
            prop_assert!(segments(&grown) <= (kept + added.len() + 1).ilog2() as usize);
            prop_assert_eq!(pages(&sequence), all.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn sequences_order_and_equal_as_their_pages_do_however_they_were_built(
            a in prop::collection::vec("[ab]", 0..5),
            b in prop::collection::vec("[ab]", 0..5),
            split in 0usize..5,
        ) {
            let flat: PageSequence = a.iter().map(CompactString::from).collect();
            let split = split.min(a.len());
            let appended = a[..split]
                .iter()
                .map(CompactString::from)
                .collect::<PageSequence>()
                .extended(a[split..].iter().map(CompactString::from));
            let other: PageSequence = b.iter().map(CompactString::from).collect();
            prop_assert_eq!(&flat, &appended);
            prop_assert_eq!(flat.cmp(&other), a.cmp(&b));
            prop_assert_eq!(appended.cmp(&other), a.cmp(&b));
            prop_assert_eq!(appended == other, a == b);
            let shared = appended.clone();
            prop_assert!(shared.same(&appended));
            prop_assert_eq!(shared.cmp(&appended), Ordering::Equal);
        }
    }

    fn two_segments() -> PageSequence {
        ["/a", "/b"]
            .into_iter()
            .map(CompactString::from)
            .collect::<PageSequence>()
            .extended([CompactString::from("/c")])
    }

    #[test]
    fn a_sequence_serializes_as_a_list_of_pages() {
        let json = serde_json::to_string(&two_segments()).unwrap();
        assert_eq!(json, r#"["/a","/b","/c"]"#);
        let back: PageSequence = serde_json::from_str(&json).unwrap();
        assert_eq!(pages(&back), ["/a", "/b", "/c"]);
    }

    #[test]
    fn a_sequence_crosses_between_processes() {
        use timely::dataflow::channels::ContainerBytes;
        let sent = vec![two_segments()];
        let mut bytes = Vec::new();
        sent.into_bytes(&mut bytes);
        assert_eq!(bytes.len(), sent.length_in_bytes());
        let received =
            Vec::<PageSequence>::from_bytes(timely::bytes::arc::BytesMut::from(bytes).freeze());
        assert_eq!(received, sent);
    }
}
