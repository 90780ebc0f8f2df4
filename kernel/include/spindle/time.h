// Time: a monotonic nanosecond clock that satisfies the std Clock concept, so
// std::chrono durations work everywhere a Spindle call takes a timeout.
#pragma once

#include <chrono>
#include <cstdint>

namespace spindle {

using Duration = std::chrono::nanoseconds;

// Monotonic since boot; never goes backwards; same time base on every CPU.
struct Clock {
  using rep = std::int64_t;
  using period = std::nano;
  using duration = std::chrono::nanoseconds;
  using time_point = std::chrono::time_point<Clock>;
  static constexpr bool is_steady = true;
  // Any context, including interrupt handlers.
  static time_point now() noexcept;
};

using TimePoint = Clock::time_point;

// A deadline far enough away to mean "wait forever".
inline constexpr TimePoint kForever = TimePoint::max();

// Converts a relative timeout to an absolute deadline without overflowing.
TimePoint deadline_after(Duration d) noexcept;

// Converts any std::chrono time point on another clock to Spindle's clock.
template <class C, class D>
TimePoint to_spindle_time(std::chrono::time_point<C, D> t) {
  if constexpr (std::is_same_v<C, Clock>) {
    return std::chrono::time_point_cast<Duration>(t);
  } else {
    return deadline_after(std::chrono::duration_cast<Duration>(t - C::now()));
  }
}

}  // namespace spindle
