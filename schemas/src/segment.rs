//! The Segment e-commerce event names CROW gives meaning to.
//!
//! The funnel (view → cart → checkout → payment → order), the offline
//! describer and the demo generator read or emit these names. Any other
//! event name is allowed (custom events) and stays plain text: this enum is
//! only for the names CROW interprets.

/// One Segment e-commerce spec event CROW interprets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SegmentEvent {
    /// `Products Searched`.
    ProductsSearched,
    /// `Product Clicked`.
    ProductClicked,
    /// `Product Viewed`: the funnel's first step.
    ProductViewed,
    /// `Product Added` (to the cart): the funnel's second step.
    ProductAdded,
    /// `Product Removed` (from the cart).
    ProductRemoved,
    /// `Cart Viewed`.
    CartViewed,
    /// `Checkout Started`: the funnel's third step.
    CheckoutStarted,
    /// `Checkout Step Viewed`.
    CheckoutStepViewed,
    /// `Checkout Step Completed`.
    CheckoutStepCompleted,
    /// `Payment Info Entered`: the funnel's fourth step.
    PaymentInfoEntered,
    /// `Order Completed`: the funnel's last step, a conversion.
    OrderCompleted,
}

impl SegmentEvent {
    /// Every event, in funnel order where they are steps.
    pub const ALL: [SegmentEvent; 11] = [
        SegmentEvent::ProductsSearched,
        SegmentEvent::ProductClicked,
        SegmentEvent::ProductViewed,
        SegmentEvent::ProductAdded,
        SegmentEvent::ProductRemoved,
        SegmentEvent::CartViewed,
        SegmentEvent::CheckoutStarted,
        SegmentEvent::CheckoutStepViewed,
        SegmentEvent::CheckoutStepCompleted,
        SegmentEvent::PaymentInfoEntered,
        SegmentEvent::OrderCompleted,
    ];

    /// The event's name as Segment spells it (and as it is stored).
    pub const fn as_str(self) -> &'static str {
        match self {
            SegmentEvent::ProductsSearched => "Products Searched",
            SegmentEvent::ProductClicked => "Product Clicked",
            SegmentEvent::ProductViewed => "Product Viewed",
            SegmentEvent::ProductAdded => "Product Added",
            SegmentEvent::ProductRemoved => "Product Removed",
            SegmentEvent::CartViewed => "Cart Viewed",
            SegmentEvent::CheckoutStarted => "Checkout Started",
            SegmentEvent::CheckoutStepViewed => "Checkout Step Viewed",
            SegmentEvent::CheckoutStepCompleted => "Checkout Step Completed",
            SegmentEvent::PaymentInfoEntered => "Payment Info Entered",
            SegmentEvent::OrderCompleted => "Order Completed",
        }
    }

    /// The event named exactly `name` (case matters, as in Segment), or
    /// `None` for any other (custom) event.
    pub fn from_name(name: &str) -> Option<SegmentEvent> {
        SegmentEvent::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

impl std::fmt::Display for SegmentEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_custom_events_are_not_spec_events() {
        for e in SegmentEvent::ALL {
            assert_eq!(SegmentEvent::from_name(e.as_str()), Some(e));
            assert_eq!(e.to_string(), e.as_str());
        }
        assert_eq!(
            SegmentEvent::from_name("Order Completed"),
            Some(SegmentEvent::OrderCompleted)
        );
        for custom in ["Payment Failed", "order completed", "Video Played", ""] {
            assert_eq!(SegmentEvent::from_name(custom), None, "{custom}");
        }
    }
}
