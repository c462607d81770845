//! Questions to the agent on a container's connection that have an answer (Stats, Update,
//! Pause and Resume): one at a time per container, the answer picked out of the frames
//! that carry the process's output.

use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::Duration;

use agent::protocol::CgroupStats;

/// How long a question waits for the agent's answer.
pub const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// What the agent answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Stats(CgroupStats),
    /// Done, or the agent's reason why not.
    Done(Option<String>),
}

/// One container's outstanding question.
#[derive(Default)]
pub struct AnswerWait {
    turn: Mutex<()>,
    answer: Mutex<Option<mpsc::Sender<Answer>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AnswerWait {
    /// The agent's answer (one nobody asked for is dropped).
    pub fn deliver(&self, answer: Answer) {
        if let Some(tx) = lock(&self.answer).take() {
            let _ = tx.send(answer);
        }
    }

    /// Asks through `ask` (which sends the question) and waits up to `timeout` for the
    /// answer: `Ok(None)` when none came in time.
    pub fn ask<E>(
        &self,
        ask: impl FnOnce() -> Result<(), E>,
        timeout: Duration,
    ) -> Result<Option<Answer>, E> {
        let _turn = lock(&self.turn);
        let (tx, rx) = mpsc::channel();
        *lock(&self.answer) = Some(tx);
        let asked = ask();
        let answer = asked.map(|()| rx.recv_timeout(timeout).ok());
        lock(&self.answer).take();
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_arrives_a_missing_one_times_out_and_a_stray_one_is_dropped() {
        let wait = std::sync::Arc::new(AnswerWait::default());
        // Nobody asked: dropped, and the next question does not get it.
        wait.deliver(Answer::Done(None));
        let none = wait.ask(|| Ok::<(), ()>(()), Duration::from_millis(50));
        assert_eq!(none, Ok(None));
        let answering = wait.clone();
        let got = wait.ask(
            move || {
                std::thread::spawn(move || answering.deliver(Answer::Done(Some("no".into()))));
                Ok::<(), ()>(())
            },
            Duration::from_secs(10),
        );
        assert_eq!(got, Ok(Some(Answer::Done(Some("no".into())))));
        assert_eq!(wait.ask(|| Err::<(), _>("gone"), ANSWER_WAIT), Err("gone"));
    }
}
