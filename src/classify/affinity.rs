//! Routing affinity: a conversation that went premium stays premium.
//!
//! A premium turn is remembered under its [`Thread::slot`]: the opener on a first turn, the
//! opener plus the first reply afterwards. A turn is premium-bound if either its opener or its
//! reply key was remembered. So a first turn that went premium holds every later turn, while a
//! premium later turn holds only its own conversation, not every conversation that opened with
//! the same greeting.
//!
//! The memory is bounded and forgets the idlest conversations first: two generations of at most
//! `cap / 2` threads each. New marks go to the current generation; when it is full it becomes the
//! previous one and the old previous one is dropped. A thread found in the previous generation is
//! carried into the current one, so a conversation that is still talking is never forgotten
//! (clearing one table at its cap, as before, forgot every live conversation at once).

use std::collections::HashSet;

use parking_lot::Mutex;

use crate::cache::{Namespace, Thread};

#[derive(Debug)]
pub struct Affinity {
    half: usize,
    generations: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashSet<Namespace>,
    previous: HashSet<Namespace>,
}

impl Generations {
    fn insert(&mut self, key: Namespace, half: usize) {
        if self.current.len() >= half && !self.current.contains(&key) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key);
    }

    /// Whether `key` is remembered; carried into the current generation if it was only in the
    /// previous one.
    fn touch(&mut self, key: Namespace, half: usize) -> bool {
        if self.current.contains(&key) {
            return true;
        }
        if self.previous.remove(&key) {
            self.insert(key, half);
            return true;
        }
        false
    }
}

impl Affinity {
    /// Remembers at most `cap` premium threads (at least 2).
    pub fn new(cap: usize) -> Self {
        Affinity { half: (cap / 2).max(1), generations: Mutex::default() }
    }

    /// Whether the conversation already went premium.
    pub fn is_premium(&self, thread: &Thread) -> bool {
        let mut g = self.generations.lock();
        // both keys are touched, so neither is forgotten while the conversation goes on
        let opener = g.touch(thread.opener, self.half);
        let reply = thread.reply.is_some_and(|r| g.touch(r, self.half));
        opener || reply
    }

    /// The turn went premium: every later turn of its conversation will too.
    pub fn remember_premium(&self, thread: &Thread) {
        self.generations.lock().insert(thread.slot(), self.half);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads remembered now.
    fn remembered(a: &Affinity) -> usize {
        let g = a.generations.lock();
        g.current.len() + g.previous.len()
    }

    fn ns(i: u32) -> Namespace {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&i.to_le_bytes());
        Namespace(b)
    }

    fn first_turn(i: u32) -> Thread {
        Thread { opener: ns(i), reply: None }
    }

    #[test]
    fn a_premium_first_turn_holds_every_later_turn() {
        let a = Affinity::new(100);
        a.remember_premium(&first_turn(1));
        assert!(a.is_premium(&first_turn(1)));
        assert!(a.is_premium(&Thread { opener: ns(1), reply: Some(ns(1001)) }));
        assert!(!a.is_premium(&first_turn(2)));
    }

    #[test]
    fn a_premium_later_turn_holds_only_its_own_conversation() {
        let a = Affinity::new(100);
        // two conversations open with the same greeting and part at their replies
        let (mine, other) =
            (Thread { opener: ns(1), reply: Some(ns(11)) }, Thread { opener: ns(1), reply: Some(ns(12)) });
        a.remember_premium(&mine);
        assert!(a.is_premium(&mine));
        assert!(!a.is_premium(&other), "the other conversation that opened alike is not pulled up");
        assert!(!a.is_premium(&first_turn(1)), "nor a new conversation opening with that greeting");
    }

    #[test]
    fn memory_is_bounded_and_forgets_the_idlest_conversations_first() {
        let a = Affinity::new(10);
        let live = first_turn(0);
        a.remember_premium(&live);
        for i in 1..1000 {
            a.remember_premium(&first_turn(i));
            // the live conversation keeps talking every few turns of others
            if i % 4 == 0 {
                assert!(a.is_premium(&live), "forgot a live conversation at {i}");
            }
            assert!(remembered(&a) <= 10, "{} threads remembered", remembered(&a));
        }
        // an idle one from long ago is gone; the most recent ones are kept
        assert!(!a.is_premium(&first_turn(1)));
        assert!(a.is_premium(&first_turn(999)));
        assert!(a.is_premium(&first_turn(995)));
    }
}
