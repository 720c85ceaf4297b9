//! How a pass acknowledges what it takes: as few `basic.ack` frames as the
//! taken messages allow.
//!
//! Why few: on a RabbitMQ 3.10 quorum queue every `basic.ack` frame becomes
//! one command to the queue, and a channel with 32 or more of them not yet
//! applied keeps further acknowledgements to itself until the queue catches
//! up; a channel that closes meanwhile drops them, and the queue gives those
//! messages back as if they had never been acknowledged (measured: up to 967
//! of 1,000 acknowledgements sent one by one and closed at once; see
//! `docs/architecture.md`, "How a dlq pass reads the dead queue"). One frame
//! with `multiple` set acknowledges a whole run as one command.
//!
//! A batch's delivery tags are `1..=size` in queue order (one consumer per
//! channel, nothing else delivered on it). While every tag so far was taken,
//! the run is acknowledged with one cumulative frame; after the first
//! message a pass keeps, a cumulative frame would remove it too, so the
//! later ones go one frame each.

/// The acknowledgements of one batch so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Acks {
    /// Every tag up to this one is acknowledged.
    through: u64,
    /// A tag above `through` was kept: no cumulative frame any more.
    gap: bool,
    /// Frames sent one tag each.
    singles: u64,
}

/// The frames that acknowledge some tags of one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AckFrames {
    /// One `basic.ack` with `multiple` up to this tag.
    pub through: Option<u64>,
    /// Then one `basic.ack` for each of these.
    pub singles: Vec<u64>,
}

impl Acks {
    /// The frames for `tags` (ascending, never acknowledged before).
    pub fn frames(&mut self, tags: &[u64]) -> AckFrames {
        let mut frames = AckFrames::default();
        for &tag in tags {
            if !self.gap && tag == self.through + 1 {
                self.through = tag;
                frames.through = Some(tag);
            } else {
                self.gap = true;
                frames.singles.push(tag);
            }
        }
        self.singles += frames.singles.len() as u64;
        frames
    }

    /// Frames sent one tag each so far: at 32 or more, some may still be
    /// held back by the channel (see the module notes).
    pub fn singles(&self) -> u64 {
        self.singles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_from_the_first_tag_is_one_cumulative_frame() {
        let mut acks = Acks::default();
        let frames = acks.frames(&[1, 2, 3, 4]);
        assert_eq!(frames.through, Some(4));
        assert!(frames.singles.is_empty());
        let more = acks.frames(&[5, 6]);
        assert_eq!(more.through, Some(6), "a later call extends the run");
        assert_eq!(acks.singles(), 0);
    }

    #[test]
    fn after_a_kept_message_every_tag_is_its_own_frame() {
        let mut acks = Acks::default();
        // 3 is kept: a cumulative ack of 4 or 5 would remove it.
        let frames = acks.frames(&[1, 2, 4, 5]);
        assert_eq!(frames.through, Some(2));
        assert_eq!(frames.singles, vec![4, 5]);
        // Even a tag that would have continued the run stays single now.
        let later = acks.frames(&[6]);
        assert_eq!(later.through, None);
        assert_eq!(later.singles, vec![6]);
        assert_eq!(acks.singles(), 3);
    }

    #[test]
    fn a_first_tag_kept_means_no_cumulative_frame_at_all() {
        let mut acks = Acks::default();
        let frames = acks.frames(&[2, 3]);
        assert_eq!(frames.through, None);
        assert_eq!(frames.singles, vec![2, 3]);
    }
}
