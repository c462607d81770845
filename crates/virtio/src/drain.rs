//! The request loop shared by the device models.

use vm_memory::GuestMemoryMmap;

use crate::queue::{ChainError, Queue, QueueError, Segment};

/// Requests handled per call before yielding back to the I/O thread (which is re-kicked).
const BUDGET: u32 = 1024;

/// Pop every available chain, let `handle` serve it (it gets the chain's buffers, or why
/// the chain is malformed) and return it with the byte count `handle` wrote. Returns
/// whether the budget ran out with requests possibly left.
pub(crate) fn drain<F>(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    scratch: &mut Vec<Segment>,
    handle: F,
) -> Result<bool, QueueError>
where
    F: FnMut(&GuestMemoryMmap, Result<&[Segment], ChainError>) -> u32,
{
    drain_admitted(queue, mem, scratch, |_| true, handle)
}

/// [`drain`], asking `admit` first about each well-formed chain: when it says no (a rate
/// limiter is short), the chain stays in the ring for the next call and this one returns
/// `Ok(false)` — the limiter's timer, not a kick, resumes the queue.
pub(crate) fn drain_admitted<A, F>(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    scratch: &mut Vec<Segment>,
    mut admit: A,
    mut handle: F,
) -> Result<bool, QueueError>
where
    A: FnMut(&[Segment]) -> bool,
    F: FnMut(&GuestMemoryMmap, Result<&[Segment], ChainError>) -> u32,
{
    let mut done = 0;
    loop {
        while let Some(head) = queue.pop(mem)? {
            let chain = queue
                .read_chain(mem, head, scratch)
                .map(|()| scratch.as_slice());
            if let Ok(segs) = chain {
                if !admit(segs) {
                    queue.undo_pop();
                    return Ok(false);
                }
            }
            let len = handle(mem, chain);
            queue.add_used(mem, head, len)?;
            done += 1;
            if done >= BUDGET {
                return Ok(true);
            }
        }
        if !queue.enable_notification(mem)? {
            return Ok(false);
        }
    }
}
